"""The console of a run shows everything written to stderr except TensorFlow's start-up lines."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import threading

from marsrover.console import _pass_on, is_tensorflow_startup_line, without_tensorflow_startup_lines

STARTUP = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
           "I0000 00:00:1796459891.087491   16805 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
           "GPU will not be used.\n"
           "E0000 00:00:1796459895.257672   16805 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
           "Failed call to cuInit: UNKNOWN ERROR (303)\n"
           # on a CPU with instructions the binary was not built for (here an AMD EPYC)
           "I0000 00:00:1796468427.094243   31495 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to "
           "use available CPU instructions in performance-critical operations.\n"
           "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
           "appropriate compiler flags.\n")


def test_only_tensorflows_known_start_up_lines_are_left_out():
    kept = "E0000 00:00:1.5 7 other_module.cc:9] a real error\nTraceback (most recent call last):\n"
    assert without_tensorflow_startup_lines(STARTUP + kept) == kept
    assert all(is_tensorflow_startup_line(line) for line in STARTUP.splitlines())
    assert not is_tensorflow_startup_line("Could not find cuda drivers on your machine")  # not in TensorFlow's form
    assert not is_tensorflow_startup_line("To enable the following instructions: AVX2 FMA")  # not the whole line
    assert not is_tensorflow_startup_line("W0000 00:00:1.5 7 cpu_feature_guard.cc:9] another message")


def test_the_block_drops_start_up_lines_written_from_c_and_passes_on_the_rest_as_it_comes():
    # A child process, so that descriptor 2 is a real one (pytest's capture would stand in for it here).
    script = textwrap.dedent(f"""
        import os, sys, time
        from marsrover.console import quiet_tensorflow_startup
        with quiet_tensorflow_startup():
            os.write(2, {STARTUP.encode()!r})  # as TensorFlow's C++ writes them
            os.write(2, b"a warning that may matter\\n")
            sys.stderr.write("\\rprogress 1/2\\rprogress 2/2")  # a tqdm bar: each redraw begins with "\\r"
            sys.stderr.flush()
            bar = "█".encode()
            os.write(2, bar[:2]); time.sleep(0.2); os.write(2, bar[2:] + b"\\n")  # one character, two reads
            os.write(2, b"no line ending")
        os.write(2, b"\\nafter the block: " + {STARTUP.splitlines()[1].encode()!r})
        print("stdout untouched")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)  # bytes: keep each \r
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert result.stdout.decode() == "stdout untouched\n"
    assert stderr == ("a warning that may matter\n\rprogress 1/2\rprogress 2/2█\nno line ending\n"
                             "after the block: " + STARTUP.splitlines()[1])


def test_unfinished_text_is_passed_on_at_once_unless_it_could_still_become_a_start_up_line():
    source_read, source_write = os.pipe()
    console_read, console_write = os.pipe()
    reader = threading.Thread(target=_pass_on, args=(source_read, console_write), daemon=True)
    reader.start()

    def shown(timeout: float) -> bytes:  # what reaches the console within timeout, in one or more writes
        text = b""
        while select.select([console_read], [], [], 0.2 if text else timeout)[0]:
            text += os.read(console_read, 1000)
        return text

    os.write(source_write, b"\rClassifying: 1/3")  # a progress bar's redraw: no line ending yet
    assert shown(5) == b"\rClassifying: 1/3"
    os.write(source_write, STARTUP.splitlines()[1][:40].encode())  # the first part of a start-up line
    assert shown(0.5) == b""
    os.write(source_write, STARTUP.splitlines()[1][40:].encode() + b"\nthe next line\n")
    os.close(source_write)
    reader.join(timeout=5)
    assert shown(5) == b"the next line\n"
    os.close(console_write)
    os.close(console_read)
