"""Errors for people: one base class, messages that carry the offending values and what to do.

The CLI prints `error: <message>` on one line and exits with the class's exit code; set
QCONVERT_DEBUG=1 to see the traceback instead. Internal invariants are plain asserts.
"""

import signal


class QConvertError(Exception):
    """Base of every error qconvert reports to a user."""

    exit_code = 1
    kind = "error"  # the `kind` of a --json error report (report.ErrorDetail): one per class


class UsageError(QConvertError):
    """The command line asks for something inconsistent (output exists, bad option value)."""

    exit_code = 2
    kind = "usage"


class CheckpointError(QConvertError):
    """The checkpoint directory is missing files or holds files we cannot read."""

    kind = "checkpoint"


class UnsupportedError(QConvertError):
    """Valid input that qconvert does not handle (architecture, dtype, quant type)."""

    kind = "unsupported"


class TokenizerError(QConvertError):
    """The tokenizer files cannot be exported as llama.cpp expects."""

    kind = "tokenizer"


class QuantizationError(QConvertError):
    """A tensor cannot be quantized to the requested type (shape not a multiple of the block)."""

    kind = "quantization"


class OutputError(QConvertError):
    """The output cannot be written: disk full, quota, file size limit, permissions."""

    kind = "output"


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. The CLI's signal handler raises it in the main thread, so every
    `finally` on the way out runs (the writer deletes its temporary file) and the process exits
    128 + the signal number, as a shell reports a process killed by that signal (130, 143).

    A BaseException, as KeyboardInterrupt is, so that no `except Exception` swallows it; and not a
    KeyboardInterrupt, which click (under typer) would turn into its own Abort and exit 0 or 1."""

    kind = "interrupted"

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


class GGUFError(QConvertError):
    """A file given as GGUF is missing, not a regular file, or not a well-formed GGUF file."""

    kind = "gguf"


class ManifestError(UsageError):
    """A batch manifest is not readable TOML or asks for what qconvert cannot do: an unknown key,
    a value of the wrong type, two outputs to one path."""

    kind = "manifest"
