"""`python -m export`: train the members and write them into a Triton model repository.

python -m export [--repository DIR] [--profile accurate|fast] [--train-data FILE --text-column C --label-column L]
                 [--server HOST:PORT [--admin-key KEY]]
python -m export --from-pretrained CHECKPOINT_DIR --name MODEL [--repository DIR]

Without --train-data the members learn the built-in synthetic corpus (six topics); with it, the user's own labelled
rows and label set (CSV with a header row, or JSONL). With --server (the HTTP endpoint of the Triton serving the
repository) the ensembles switch from the old models to the new ones at once (release/switch.py).
"""

import argparse
import logging
import os
import sys
from pathlib import Path

from tritonclient.utils import InferenceServerException

from conventions import REPOSITORY
from export import datasets
from export.ensemble import export_default
from export.members import DEFAULT_PROFILE, PROFILES
from release.gates import MAX_DROP, MIN_ACCURACY, Rejected
from release.live import Live


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=REPOSITORY)
    parser.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE)
    parser.add_argument("--train-data", type=Path, metavar="FILE", help="labelled rows to train on (.csv or .jsonl)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--from-pretrained",
        type=Path,
        metavar="CHECKPOINT_DIR",
        help="a local Hugging Face sequence-classification checkpoint to add as a model",
    )
    parser.add_argument("--name", help="model name for --from-pretrained: a new model, or the next version of one")
    parser.add_argument(
        "--min-accuracy", type=float, default=MIN_ACCURACY, help="--from-pretrained of a member: the deploy gate"
    )
    parser.add_argument(
        "--max-drop", type=float, default=MAX_DROP, help="--from-pretrained of a member: the deploy gate"
    )
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        help="Triton's HTTP endpoint serving --repository: switch its ensembles to the new models at once",
    )
    parser.add_argument(
        "--admin-key", default=os.environ.get("TRITON_ADMIN_KEY"), help="the server's admin key (repository API)"
    )
    return parser


def main() -> None:
    parser = arguments()
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if args.from_pretrained:
        if not args.name:
            parser.error("--from-pretrained needs --name")
        from export.pretrained import export_pretrained

        try:
            export_pretrained(args.from_pretrained, args.name, args.repository, args.min_accuracy, args.max_drop)
        except (ValueError, Rejected) as error:
            sys.exit(f"--from-pretrained {args.from_pretrained}: refused: {error}")
    else:
        try:
            data = (
                datasets.from_file(args.train_data, args.text_column, args.label_column, args.seed)
                if args.train_data
                else datasets.synthetic(args.seed)
            )
        except (OSError, ValueError) as error:
            parser.error(str(error))
        if not args.server:
            export_default(args.repository, args.profile, data, args.seed)
            return
        with Live(args.server, args.admin_key) as live:
            try:
                live.check()  # before training, not after
            except (InferenceServerException, OSError) as error:
                key = " (the server's admin key: --admin-key or TRITON_ADMIN_KEY)" if "restricted" in str(error) else ""
                parser.error(f"--server {args.server}: {error}{key}")
            try:
                export_default(args.repository, args.profile, data, args.seed, live)
            except (InferenceServerException, TimeoutError, OSError) as error:
                sys.exit(f"export did not go live: {error}")


if __name__ == "__main__":
    main()
