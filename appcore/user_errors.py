"""Which errors are the visitor's: their messages are written for the page and shown as they are. Any other
exception is the server's (a shape bug is a ``ValueError`` too): logged with its traceback, shown as one generic
line (``appcore.presentation.message_of``)."""
from __future__ import annotations

from appcore.catalogue import ModelUnavailable
from appcore.photos import PhotoRejected
from fundus import ImageError, NotFundusError


class UserInputError(ValueError):
    """A value the visitor sent that cannot be used: a target the model does not have, a control out of range."""


# A photo that cannot be read or is no fundus photograph, a model that cannot be had, a value that cannot be used.
USER_ERRORS: tuple[type[Exception], ...] = (ImageError, NotFundusError, PhotoRejected, ModelUnavailable, UserInputError)


def is_users(exc: BaseException) -> bool:
    """The visitor caused it and can act on its message."""
    return isinstance(exc, USER_ERRORS)
