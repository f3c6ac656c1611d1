"""The AWS adapter: the only package that imports boto3.

The endpoint comes from boto3 itself (`AWS_ENDPOINT_URL`): the lab is just another endpoint.
"""

from anywhere.aws.adapter import Aws
from anywhere.aws.base import HOST_TAG, RUN_TAG
from anywhere.aws.calls import AwsClients, CallCounter, make_clients, translate
from anywhere.aws.containers import RunTaskResult
from anywhere.aws.view import AwsSnapshot, AwsState, AwsView, StateSource

__all__ = [
    "HOST_TAG",
    "RUN_TAG",
    "Aws",
    "AwsClients",
    "AwsSnapshot",
    "AwsState",
    "AwsView",
    "CallCounter",
    "RunTaskResult",
    "StateSource",
    "make_clients",
    "translate",
]
