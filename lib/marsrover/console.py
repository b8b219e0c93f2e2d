"""What the console shows: everything a run writes to stderr except TensorFlow's start-up lines.

On a machine without a GPU, TensorFlow 2.21 prints "Could not find cuda drivers" and "E0000 ... failed call
to cuInit" from C++, before it reads TF_CPP_MIN_LOG_LEVEL, so they cannot be switched off; they read as
errors though the CPU is all this project asks for. On a CPU with instructions its binary was not built for
(AVX2 and FMA on an AMD EPYC, for one), it also says so in two lines ("This TensorFlow binary is optimized
to use available CPU instructions ... rebuild TensorFlow with the appropriate compiler flags"): advice for
those who build TensorFlow, not for a user of this project. Only these known lines are dropped.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import sys
import threading

TENSORFLOW_STARTUP_LINE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+ +\d+ (port|cudart_stub|cuda_platform)\.cc:\d+\] .*"
    r"|I\d{4} [\d:.]+ +\d+ cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use available CPU "
    r"instructions in performance-critical operations\."
    r"|To enable the following instructions: .*, in other operations, rebuild TensorFlow with the appropriate "
    r"compiler flags\.")

# A piece of console text up to and including its line ending; "\r" ends one too (tqdm redraws with it).
_TERMINATED = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)")


def is_tensorflow_startup_line(line: str) -> bool:
    """Whether ``line`` (its line ending aside) is one of TensorFlow's start-up lines."""
    return TENSORFLOW_STARTUP_LINE.fullmatch(line.rstrip("\r\n")) is not None


def without_tensorflow_startup_lines(text: str) -> str:
    """``text`` less TensorFlow's start-up lines; every other line as it was."""
    return "".join(line for line in text.splitlines(keepends=True) if not is_tensorflow_startup_line(line))


def start_keras_quietly() -> None:
    """Import Keras, and TensorFlow where it is Keras' backend, letting it look for devices (where it prints its
    start-up lines), those lines left out. Any backend: the GPU sweep runs on JAX, where TensorFlow may be absent.

    Only this start is filtered, not the work after it, so that a crash's last words (a fatal "Check failed",
    written just before the process aborts) still reach the console, and a progress bar still sees a terminal.
    """
    with quiet_tensorflow_startup():
        import keras

        if keras.config.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices()


@contextlib.contextmanager
def quiet_tensorflow_startup():
    """This process's stderr, C++ included, less TensorFlow's start-up lines, while the block runs.

    File descriptor 2 (where TensorFlow's C++ writes, and Python's ``sys.stderr``) goes through a pipe whose
    reader passes on every other piece of text as it comes. Where descriptor 2 cannot be redirected (no such
    descriptor, no pipes), the block runs with stderr as it was.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except (OSError, ValueError, AttributeError):
        saved = None
    if saved is None:  # yielded outside the except clause, so the block's own errors are not chained to this one
        yield
        return
    os.dup2(write_end, 2)
    os.close(write_end)
    reader = threading.Thread(target=_pass_on, args=(read_end, saved), name="quiet-tensorflow-startup", daemon=True)
    reader.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes here, so the reader sees its end
        reader.join(timeout=5)  # a child process still holding the pipe must not hang the exit
        if not reader.is_alive():  # else the reader may still write to it: leave it open
            os.close(saved)


def _pass_on(read_end: int, destination: int) -> None:
    """Copy text from ``read_end`` to ``destination`` until the pipe closes, less TensorFlow's start-up lines.

    An unfinished line is held back only while it could still become one of them (they begin with "W", "I" or
    "E"); anything else, such as a progress bar's ``"\\r"`` and text, is passed on at once.
    """
    pending, decoder = "", codecs.getincrementaldecoder("utf-8")(errors="replace")  # a read may split a character
    with open(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            pending += decoder.decode(chunk)
            done = 0
            for piece in _TERMINATED.finditer(pending):
                if not is_tensorflow_startup_line(piece.group()):
                    _write_all(destination, piece.group())
                done = piece.end()
            pending = pending[done:]
            if pending and pending[0] not in "WIE":
                _write_all(destination, pending)
                pending = ""
    if pending := pending + decoder.decode(b"", final=True):
        _write_all(destination, pending)


def _write_all(destination: int, text: str) -> None:
    data = text.encode("utf-8")
    while data:
        data = data[os.write(destination, data):]
