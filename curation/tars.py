"""Where the stages that write tars import `add_member` from; the one tar module (reading and
writing, webdataset's key rule) is training.data.tars."""

from training.data.tars import add_member

__all__ = ["add_member"]
