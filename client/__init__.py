"""Client library for the feedback ensembles: FeedbackClient (sync, gRPC/HTTP, shared memory) and
AsyncFeedbackClient (asyncio, gRPC). `python -m client --help` is the command-line interface."""

from client.aio import AsyncFeedbackClient
from client.errors import ClientError
from client.feedback import Backoff, FeedbackClient
from client.predictions import Prediction

__all__ = ["AsyncFeedbackClient", "Backoff", "ClientError", "FeedbackClient", "Prediction"]
