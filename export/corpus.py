"""A deterministic, labeled customer-feedback corpus.

Generated from phrase templates so that nothing is downloaded and every run gives the same rows. Each comment is
about one topic (the label), in a positive, negative or mixed tone. As in real feedback, some comments are vague
("it is slow"), some mention a second topic in passing, and a few labels disagree with the text (annotators do),
so no member is perfect and combining them has something to gain.
"""

import random
from dataclasses import dataclass

TOPICS = ("price", "support", "usability", "performance", "billing", "onboarding")

# Phrases that name what a comment is about; several per topic, some overlapping in vocabulary on purpose.
SUBJECTS = {
    "price": [
        "the price",
        "the monthly cost",
        "the subscription fee",
        "the pricing tiers",
        "what we pay",
        "the cost per seat",
        "the enterprise plan price",
        "the value for money",
    ],
    "support": [
        "the support team",
        "customer service",
        "the help desk",
        "the agent on chat",
        "the support ticket",
        "the response from support",
        "the phone support",
        "your technicians",
    ],
    "usability": [
        "the interface",
        "the dashboard layout",
        "the navigation",
        "the settings page",
        "the menus",
        "the search box",
        "the design of the app",
        "the editor",
    ],
    "performance": [
        "the app speed",
        "page load times",
        "the sync",
        "the export job",
        "the mobile app",
        "the reports",
        "the api latency",
        "the search results",
    ],
    "billing": [
        "the invoice",
        "the payment",
        "the refund",
        "the credit card charge",
        "the billing page",
        "the receipt",
        "the renewal charge",
        "the tax on my invoice",
    ],
    "onboarding": [
        "the setup",
        "the first week",
        "the tutorial",
        "the getting started guide",
        "the account setup",
        "the import of our data",
        "the welcome call",
        "the training session",
    ],
}

POSITIVE = {
    "price": ["is fair", "is cheaper than the alternatives", "is worth every cent", "fits our budget"],
    "support": ["answered within minutes", "was friendly and solved it", "went above and beyond", "was patient"],
    "usability": ["is intuitive", "is clean and easy to use", "makes sense right away", "is a joy to use"],
    "performance": ["is fast", "loads instantly", "never lags", "is quick even with big files"],
    "billing": ["was correct", "arrived on time", "was clear and itemized", "was processed quickly"],
    "onboarding": ["was smooth", "took only an hour", "walked us through everything", "was well organized"],
}

NEGATIVE = {
    "price": ["is too expensive", "went up again", "is not worth it", "is way over our budget"],
    "support": ["never answered", "closed my ticket without a fix", "was rude", "kept me waiting for days"],
    "usability": ["is confusing", "hides the options i need", "is cluttered", "takes too many clicks"],
    "performance": ["is slow", "keeps freezing", "times out", "crashes with large files"],
    "billing": ["charged me twice", "was wrong", "never arrived", "had a charge i did not expect"],
    "onboarding": ["was a mess", "took weeks", "left us on our own", "skipped the basics"],
}

OPENERS = [
    "",
    "honestly",
    "overall",
    "to be fair",
    "well",
    "so far",
    "after a month",
    "i have to say",
    "as a long time user",
    "our team thinks",
    "quick note",
    "update",
]
CLOSERS = [
    "",
    "thanks",
    "please fix this",
    "keep it up",
    "would recommend",
    "not happy",
    "!",
    "great job",
    "we are considering other options",
    "just my two cents",
]
VAGUE_SUBJECTS = ["it", "this", "the product", "everything", "your tool", "the whole thing"]
ASIDES = [
    "though {subject} {verdict}",
    "but {subject} {verdict}",
    "and {subject} {verdict} too",
    "while {subject} {verdict}",
    "also {subject} {verdict}",
]
ASIDE_VERDICTS = ["was fine", "was ok", "could be better", "is alright", "is what it is", "was not great"]
LABEL_NOISE = 0.04  # share of comments whose label disagrees with the text


@dataclass(frozen=True)
class Comment:
    text: str
    topic: str
    sentiment: str  # "positive" | "negative" | "mixed"

    @property
    def label(self) -> int:
        return TOPICS.index(self.topic)


def _verdict(rng: random.Random, topic: str, positive: bool) -> str:
    return rng.choice(POSITIVE[topic] if positive else NEGATIVE[topic])


def _comment(rng: random.Random) -> Comment:
    topic = rng.choice(TOPICS)
    sentiment = rng.choices(("positive", "negative", "mixed"), weights=(4, 4, 2))[0]
    positive = sentiment == "positive" or (sentiment == "mixed" and rng.random() < 0.5)
    subject = rng.choice(VAGUE_SUBJECTS) if rng.random() < 0.3 else rng.choice(SUBJECTS[topic])
    parts = [rng.choice(OPENERS), subject, _verdict(rng, topic, positive)]
    if sentiment == "mixed":
        # The same topic again with the opposite verdict.
        parts.append(f"but {rng.choice(SUBJECTS[topic])} {_verdict(rng, topic, not positive)}")
    if rng.random() < 0.4:
        # A passing, milder mention of another topic, before or after the main one; the label stays the main topic.
        other = rng.choice([t for t in TOPICS if t != topic])
        aside = rng.choice(ASIDES).format(subject=rng.choice(SUBJECTS[other]), verdict=rng.choice(ASIDE_VERDICTS))
        parts.insert(1, aside) if rng.random() < 0.5 else parts.append(aside)
    parts.append(rng.choice(CLOSERS))
    if rng.random() < LABEL_NOISE:
        topic = rng.choice([t for t in TOPICS if t != topic])
    return Comment(" ".join(p for p in parts if p), topic, sentiment)


def generate(n: int = 6000, seed: int = 13) -> list[Comment]:
    rng = random.Random(seed)
    return [_comment(rng) for _ in range(n)]
