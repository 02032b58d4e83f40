"""The exceptions edgerun raises for user errors.

Every problem a user can cause (a bad file, a wrong feed, an unknown board) is an
``EdgerunError``; the CLI turns exactly these into one line and exit status 2, so anything
else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgerunError(Exception):
    """Base class of every error edgerun raises on purpose."""


class ModelFormatError(EdgerunError):
    """A model file is malformed: bad protobuf or flatbuffer, bad tensor, bad external data."""


class UnsafePathError(ModelFormatError):
    """A path in a model or bundle would leave its folder or archive."""


class BundleError(EdgerunError):
    """A bundle is corrupt, tampered with, truncated or from a newer edgerun."""


class ProfileError(EdgerunError):
    """A device profile is missing, malformed or names an unknown board."""


class MissingDependencyError(EdgerunError):
    """An optional package is needed and not installed; the message names the extra."""


class UnsupportedOpError(EdgerunError):
    """A model uses an operator the chosen backend cannot run."""


class InputError(EdgerunError):
    """Feeds given to a session do not match its inputs."""


class ConversionError(EdgerunError):
    """A converter, optimiser or quantizer rejected the model while packing it."""


class AccuracyError(EdgerunError):
    """A packed model lost more accuracy than the user allowed."""


class ResourceLimitError(EdgerunError, ValueError):
    """A model or input would need more memory than the budget allows.

    Also a ValueError, so a kernel that refuses an allocation is reported like any other
    failed node: the plan names the node around this message.
    """


class BackendUnavailableError(EdgerunError):
    """A backend, execution provider or delegate was asked for and cannot run here (strict
    mode), or none of the ones asked for can."""


class BackendFallbackWarning(UserWarning):
    """A backend, execution provider or delegate asked for is missing; the next one runs."""


class BackendRunError(EdgerunError):
    """A delegated runtime (onnxruntime, LiteRT) failed while running a model it had loaded."""
