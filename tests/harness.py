"""What the Python tests of rosettad share: checks that print PASS or FAIL and collect failures,
and a rosettad process on a free loopback port."""

import signal
import subprocess
import threading

failures = []


def check(condition, what, details=""):
    """Records one check; prints PASS or FAIL with what was checked (and details on failure)."""
    print(f"{'PASS' if condition else 'FAIL'}: {what}", flush=True)
    if not condition:
        if details:
            print("  " + str(details).replace("\n", "\n  "), flush=True)
        failures.append(what)
    return condition


class Daemon:
    """rosettad with `flags`, listening on a free loopback port, without a metrics endpoint. Its
    stderr is kept in `log`; `serving` is set and `address` known once it reports serving."""

    def __init__(self, binary, *flags, env=None):
        self.process = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--metrics_listen",
                                         "none", *flags], stderr=subprocess.PIPE, text=True,
                                        env=env)
        self.log = []
        self.address = None
        self.serving = threading.Event()
        self._settled = threading.Event()  # serving, or its stderr ended (it exited)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stderr:
            self.log.append(line)
            if "serving on " in line:
                self.address = line.rsplit("serving on ", 1)[1].split()[0]
                self.serving.set()
                self._settled.set()
        self._settled.set()

    def wait_serving(self, timeout=60):
        """Whether it reports serving within `timeout` s; False at once if it exits first."""
        self._settled.wait(timeout)
        return self.serving.is_set()

    def wait(self, timeout=60):
        """The exit status, once the process has ended and all its log has been read."""
        status = self.process.wait(timeout=timeout)
        self._reader.join(timeout)
        return status

    def stop(self, timeout=60):
        """SIGTERM, then the exit status (None if it had to be killed)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None
