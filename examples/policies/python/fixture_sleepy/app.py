"""Test fixture: an egress policy in Python that calls time.sleep(20) for destination port
669, sleeps 1 ms at a time until 20 s have passed for port 671, and allows every flow once
it is done; with the config text "sleep-in-init", init sleeps 20 s. The gateway must wake
each sleep by the call's deadline, so the worker never stalls.

Built by scripts/setup.sh (componentize-py) -> target/policies/sleepy_python.wasm
"""

import time

from wit_world import WitWorld as _World, exports
from wit_world.imports.types import Flow, Verdict


class WitWorld(_World):
    pass


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        if config.strip() == "sleep-in-init":
            time.sleep(20)


class Egress(exports.Egress):
    def check(self, f: Flow) -> Verdict:
        if f.dst_port == 669:
            time.sleep(20)
        elif f.dst_port == 671:
            end = time.monotonic() + 20
            while time.monotonic() < end:
                time.sleep(0.001)
        return Verdict.ALLOW
