#!/usr/bin/env python3
"""Side-by-side tunnel benchmark in network namespaces: raw veth vs boringtun vs meshd.

Two namespaces joined by one veth pair carry the same traffic over up to four paths: the
veth itself (the ceiling), a boringtun (userspace WireGuard) tunnel, a meshd tunnel, and a
meshd tunnel whose direct path is blocked so that it runs through the controller's relay
(`meshd-relay`, opt-in). The runs
alternate between the paths, so that noise on the machine (another build, thermal
throttling) lands on every path alike instead of on whichever ran last. See README.md.

Needs root, iproute2, iperf3, ping; boringtun-cli and wg for the boringtun path (installed
unless --skip-install). Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[2]
ALL_PATHS = ("raw", "boringtun", "meshd", "meshd-relay")

# The underlay: one veth pair between namespace a (client, controller) and b (server).
VETH_IP = {"a": "10.210.0.1", "b": "10.210.0.2"}
# boringtun's tunnel addresses; meshd's come from its controller's default pool.
WG_IP = {"a": "10.211.0.1", "b": "10.211.0.2"}
WG_PORT = 51820
WG_MTU = 1420
MESHD_NODE_PORT = 9993
# The relayed pair: its own daemons, port and network, the direct path between them dropped.
MESHD_RELAYED_PORT = 9983
MESHD_RELAYED_POOLS = ("--v4-pool", "10.148.0.0/16", "--container-pool", "172.32.0.0/16")
MESHD_CHANNEL_PORT = 9994
MESHD_API = "127.0.0.1:9995"
IPERF_PORT = 5201
CHECK_PORT = 5301
CHECK_BYTES = 20 * 1000 * 1000
PING_COUNT = 150
PING_INTERVAL = 0.02

# Table rows: metric key, label, unit.
METRICS = (
    ("tcp1_mbps", "TCP, 1 stream", "Mbit/s"),
    ("tcp4_mbps", "TCP, 4 streams", "Mbit/s"),
    ("udp64_kpps", "UDP 64 B, received", "kpkt/s"),
    ("udp64_loss_pct", "UDP 64 B, loss", "%"),
    ("udp64_delivered_kpps", "UDP 64 B, into b", "kpkt/s"),
    ("rtt_ms", "ping RTT, median", "ms"),
)


class BenchError(Exception):
    """A step failed; the message says which and why."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException so that no `except Exception` swallows it
    on the way up to the cleanup."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """SIGINT/SIGTERM become Interrupted, so that `finally` cleans up; inside `deferred()`
    only once the block is over, so that an interrupt never lands between making something
    (a namespace, a process) and recording it for the cleanup."""

    depth = 0
    pending: list[int] = []

    @classmethod
    def handler(cls, signum: int, _frame: object) -> None:
        """The SIGINT/SIGTERM handler."""
        if cls.depth:
            cls.pending.append(signum)
            return
        raise Interrupted(signum)

    @classmethod
    @contextlib.contextmanager
    def deferred(cls) -> Iterator[None]:
        """Holds the signals back for the duration of the block."""
        cls.depth += 1
        try:
            yield
        finally:
            cls.depth -= 1
        if cls.pending and not cls.depth:
            raise Interrupted(cls.pending.pop())


def log(msg: str) -> None:
    """Progress goes to stderr: stdout is kept for the table."""
    print(msg, file=sys.stderr, flush=True)


def run(argv: list[str], timeout: float = 30, check: bool = True,
        stdin_text: str | None = None) -> subprocess.CompletedProcess:
    """Runs a short command with its output captured. Its own process group: a Ctrl-C in
    the terminal is ours to handle (subprocess.run kills the child if we are interrupted)."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             input=stdin_text,
                             stdin=None if stdin_text is not None else subprocess.DEVNULL,
                             process_group=0)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from None
    except FileNotFoundError:
        raise BenchError(f"cannot run {argv[0]!r}: not installed?") from None
    if check and out.returncode != 0:
        detail = (out.stderr.strip() or out.stdout.strip())[-2000:]
        raise BenchError(f"`{' '.join(argv)}` failed ({out.returncode}): {detail}")
    return out


def wait_for(what: str, timeout: float, probe: Callable[[], object]) -> object:
    """Polls `probe` every 0.2 s until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def tail(path: Path, lines: int = 25) -> str:
    """The end of a log, for error reports."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Lab:
    """The namespaces, links, processes and directory the benchmark made.

    Each is recorded the moment it exists, so that cleanup() removes exactly those, by name
    and by PID, whatever failed or interrupted the run half-way.
    """

    tag: str = field(default_factory=lambda: f"mnb{os.getpid()}")
    dir: Path | None = None
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    # Paths outside `dir` that our processes create (boringtun's UAPI sockets).
    stray_files: list[Path] = field(default_factory=list)
    stray_dirs: list[Path] = field(default_factory=list)
    # Per target address, how many packets the path has handed to b's network stack, where
    # b's interface counter does not say (meshd coalesces what it writes to its TUN).
    delivered: dict[str, Callable[[], int]] = field(default_factory=dict)
    # Per target address, where the tunnel chooses among several underlay endpoints (meshd
    # measures its candidates): each side's endpoint, path_changes and last_handshake_s.
    path_state: dict[str, Callable[[], dict[str, dict]]] = field(default_factory=dict)
    # The meshd controller in a, once started: (data dir, channel address).
    meshd_controller: tuple[str, str] | None = None

    def ns(self, side: str) -> str:
        """The namespace of side "a" or "b"."""
        return f"{self.tag}-{side}"

    def build(self) -> None:
        """Namespaces a and b, loopback up, joined by a veth with one /24 between them.

        The veth ends are created directly inside the namespaces: nothing ever appears in
        the caller's namespace, and deleting the namespaces deletes the links.
        """
        with Signals.deferred():
            self.dir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        for side in "ab":
            with Signals.deferred():
                run(["ip", "netns", "add", self.ns(side)])
                self.namespaces.append(self.ns(side))
            run(["ip", "-n", self.ns(side), "link", "set", "lo", "up"])
        run(["ip", "link", "add", f"{self.tag}va", "netns", self.ns("a"), "type", "veth",
             "peer", "name", f"{self.tag}vb", "netns", self.ns("b")])
        for side in "ab":
            dev = f"{self.tag}v{side}"
            run(["ip", "-n", self.ns(side), "addr", "add", f"{VETH_IP[side]}/24", "dev", dev])
            run(["ip", "-n", self.ns(side), "link", "set", dev, "up"])

    def exec(self, side: str, argv: list[str], timeout: float = 30, check: bool = True,
             stdin_text: str | None = None) -> subprocess.CompletedProcess:
        """Runs a short command inside a namespace."""
        return run(["ip", "netns", "exec", self.ns(side), *argv], timeout, check, stdin_text)

    def spawn(self, side: str, argv: list[str], log_name: str) -> subprocess.Popen:
        """Starts a background command inside a namespace, output appended to a log in the
        lab's directory. `ip netns exec` execs, so the PID is the command's own."""
        assert self.dir is not None
        with open(self.dir / log_name, "ab") as out, Signals.deferred():
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns(side), *argv],
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, process_group=0)
            self.procs.append(proc)
        return proc

    def path(self, name: str) -> Path:
        """A file or directory in the lab's directory: logs, keys, state."""
        assert self.dir is not None
        return self.dir / name

    def stop(self, proc: subprocess.Popen, grace: float = 3) -> None:
        """SIGTERM, then SIGKILL after `grace` s; reaped either way. The Popen has not been
        reaped before we signal it, so its PID cannot belong to anyone else yet."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def cleanup(self) -> None:
        """Stops our processes, deletes our namespaces (and their links) and files.

        Signals are ignored meanwhile: a second Ctrl-C must not leave half a lab behind.
        """
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if self.dir is None:
            return  # nothing was made: preflight failed
        stopped = len(self.procs)
        for proc in list(self.procs):
            self.stop(proc)
        problems = []
        for ns in reversed(self.namespaces):
            out = run(["ip", "netns", "del", ns], check=False)
            if out.returncode != 0:
                problems.append(f"ip netns del {ns}: {out.stderr.strip()}")
        for path in self.stray_files:
            path.unlink(missing_ok=True)
        for path in self.stray_dirs:
            try:
                path.rmdir()
            except OSError:
                pass  # not empty: someone else uses it too
        shutil.rmtree(self.dir, ignore_errors=True)
        log(f"cleaned up: stopped {stopped} processes, deleted namespaces "
            f"{' '.join(self.namespaces) or '(none)'}, removed {self.dir}")
        for p in problems:
            log(f"cleanup problem: {p}")
        self.namespaces.clear()

    def describe_kept(self) -> None:
        """For --keep: what is still running and how to remove it by hand."""
        if self.dir is None:
            return
        pids = " ".join(str(p.pid) for p in self.procs)
        log(f"--keep: namespaces {' '.join(self.namespaces)}, pids {pids or '(none)'}, "
            f"logs and state in {self.dir}")
        log("to remove (as root): kill " + (pids or "<nothing>") + "; "
            + "; ".join(f"ip netns del {ns}" for ns in self.namespaces)
            + "".join(f"; rm -f {p}" for p in self.stray_files)
            + f"; rm -rf {self.dir}")

    def log_tails(self) -> None:
        """Prints the end of every log, before cleanup() removes them."""
        if self.dir is None:
            return
        for path in sorted(self.dir.glob("*.log")):
            log(f"--- {path.name} (tail)\n{tail(path)}")


# --- the paths ---------------------------------------------------------------------------


def ping_works(lab: Lab, dst: str) -> bool:
    """One echo from a to dst answered within 1 s."""
    return lab.exec("a", ["ping", "-n", "-c", "1", "-W", "1", dst], check=False).returncode == 0


def setup_raw(lab: Lab, _args: argparse.Namespace) -> str:
    """The veth itself: nothing to set up."""
    return VETH_IP["b"]


def setup_boringtun(lab: Lab, args: argparse.Namespace) -> str:
    """A boringtun-cli interface per namespace, peered over the veth with `wg set`.

    The UAPI socket lives in /var/run/wireguard/<ifname>.sock, shared by every namespace,
    so the interface names are unique per side and per run.
    """
    wg_dir = Path("/var/run/wireguard")
    if not wg_dir.exists():
        lab.stray_dirs.append(wg_dir)
    keys = {}
    for side in "ab":
        private = run(["wg", "genkey"]).stdout.strip()
        public = run(["wg", "pubkey"], stdin_text=private + "\n").stdout.strip()
        key_file = lab.path(f"wg-{side}.key")
        key_file.write_text(private + "\n")
        key_file.chmod(0o600)
        keys[side] = (key_file, public)
    for side in "ab":
        ifname = f"{lab.tag}w{side}"
        lab.stray_files.append(wg_dir / f"{ifname}.sock")
        lab.spawn(side, [args.boringtun_exe, "--foreground", "--disable-drop-privileges",
                         "--threads", str(args.boringtun_threads),
                         "--log", str(lab.path(f"boringtun-{side}.out")), ifname],
                  f"boringtun-{side}.log")
        wait_for(f"boringtun's socket for {ifname}", 10,
                 lambda ifname=ifname: (wg_dir / f"{ifname}.sock").exists())
    for side, other in (("a", "b"), ("b", "a")):
        ifname = f"{lab.tag}w{side}"
        lab.exec(side, ["wg", "set", ifname, "private-key", str(keys[side][0]),
                        "listen-port", str(WG_PORT), "peer", keys[other][1],
                        "allowed-ips", f"{WG_IP[other]}/32",
                        "endpoint", f"{VETH_IP[other]}:{WG_PORT}"])
        lab.exec(side, ["ip", "addr", "add", f"{WG_IP[side]}/24", "dev", ifname])
        lab.exec(side, ["ip", "link", "set", ifname, "up", "mtu", str(WG_MTU)])
    wait_for("a ping over boringtun", 20, lambda: ping_works(lab, WG_IP["b"]))
    return WG_IP["b"]


def meshd_status(lab: Lab, exe: str, side: str, state: str) -> dict | None:
    """A node's `status --json`, or None while its daemon does not answer."""
    out = lab.exec(side, [exe, "status", "--json", "--state", state], timeout=10, check=False)
    if out.returncode != 0:
        return None
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        return None


def meshd_network(status: dict | None, nwid: str) -> dict | None:
    """The entry for network `nwid` in a node's status."""
    for net in (status or {}).get("networks") or []:
        if net.get("id") == nwid:
            return net
    return None


def meshd_controller(lab: Lab, args: argparse.Namespace) -> tuple[str, str]:
    """The meshd controller in a (started the first time): its data dir and channel. Its
    relay forwards without a rate limit, so that the relayed path measures the relay."""
    if lab.meshd_controller:
        return lab.meshd_controller
    exe = args.meshd
    data = str(lab.path("controller"))
    channel = f"{VETH_IP['a']}:{MESHD_CHANNEL_PORT}"
    t0 = time.monotonic()
    lab.exec("a", [exe, "controller", "init", "--listen", channel, "--api-listen", MESHD_API,
                   "--relay-limit-mbit", "0", "--data", data], timeout=15)
    controller = lab.spawn("a", [exe, "controller", "run", "--data", data], "controller.log")

    def controller_up() -> bool:
        if controller.poll() is not None:
            raise BenchError(f"the meshd controller exited ({controller.returncode})")
        return lab.exec("a", [exe, "controller", "network", "list", "--data", data],
                        timeout=10, check=False).returncode == 0

    wait_for("the meshd controller's API", 30, controller_up)
    log(f"  meshd: controller up ({time.monotonic() - t0:.1f} s)")
    lab.meshd_controller = (data, channel)
    return lab.meshd_controller


def setup_meshd(lab: Lab, args: argparse.Namespace) -> str:
    """A daemon in a and in b, joined and authorized to one network (the flow of `meshd
    demo`); b's IPv4 on the network once a ping across works and the path is direct."""
    return meshd_pair(lab, args, "bench", MESHD_NODE_PORT, (), "node", "direct")


def setup_meshd_relay(lab: Lab, args: argparse.Namespace) -> str:
    """A second pair of daemons on their own port and network, with every datagram between
    their sockets dropped, so that their traffic goes through the controller's relay in a."""
    for side in "ab":
        lab.exec(side, ["nft", "-f", "-"], stdin_text=(
            f"table inet {lab.tag}relay {{\n chain out {{\n"
            f"  type filter hook output priority 0;\n"
            f"  udp sport {MESHD_RELAYED_PORT} udp dport {MESHD_RELAYED_PORT} drop\n }}\n}}\n"))
    return meshd_pair(lab, args, "relayed", MESHD_RELAYED_PORT, MESHD_RELAYED_POOLS,
                      "relayed", "relay")


def meshd_pair(lab: Lab, args: argparse.Namespace, name: str, port: int,
               pools: tuple[str, ...], prefix: str, want_path: str) -> str:
    """Daemons in a and b on `port`, joined and authorized to a new network `name`; b's
    IPv4 on it once a ping across works and a's path to b is `want_path`."""
    exe = args.meshd
    data, channel = meshd_controller(lab, args)

    def state(side: str) -> str:
        return str(lab.path(f"{prefix}-{side}"))

    def ctl(*argv: str) -> str:
        return lab.exec("a", [exe, "controller", *argv, "--data", data], timeout=15).stdout

    t0 = time.monotonic()
    nwid = ctl("network", "create", "--name", name, *pools).strip()
    if not re.fullmatch(r"[0-9a-f]{16}", nwid):
        raise BenchError(f"`meshd controller network create` printed {nwid!r}")
    log(f"  meshd: network {nwid} ({name})")

    def status(side: str) -> dict | None:
        return meshd_status(lab, exe, side, state(side))

    workers = ["--workers", str(args.meshd_workers)] if args.meshd_workers else []
    daemons = {
        side: lab.spawn(side, [exe, "daemon", "--state", state(side), "--port",
                               str(port), "--controller", channel, *workers],
                        f"{prefix}-daemon-{side}.log")
        for side in "ab"
    }
    node_ids = {}
    for side in "ab":
        def daemon_up(side: str = side) -> dict | None:
            if daemons[side].poll() is not None:
                raise BenchError(f"the meshd daemon in {side} exited "
                                 f"({daemons[side].returncode})")
            return status(side)

        node_ids[side] = wait_for(f"the meshd daemon in {side} to answer", 30,
                                  daemon_up)["node_id"]
        lab.exec(side, [exe, "join", nwid, "--state", state(side)], timeout=15)
    for side in "ab":
        # Authorize once the controller has the join (the member exists), as `meshd demo` does.
        def joined(side: str = side) -> bool:
            net = meshd_network(status(side), nwid)
            return bool(net) and net.get("status") in ("ACCESS_DENIED", "OK")

        wait_for(f"{side}'s join to reach the controller (ACCESS_DENIED)", 30, joined)
        ctl("member", "authorize", nwid, node_ids[side])
    log(f"  meshd: daemons up, joined and authorized ({time.monotonic() - t0:.1f} s)")

    addrs = {}
    for side in "ab":
        def configured(side: str = side) -> dict | None:
            net = meshd_network(status(side), nwid)
            return net if net and net.get("status") == "OK" else None

        net = wait_for(f"network status OK on {side}", 30, configured)
        v4 = [a.split("/")[0] for a in net.get("addresses", []) if "." in a]
        if not v4:
            raise BenchError(f"{side}: no IPv4 address on the network: {net}")
        addrs[side] = v4[0]
    log(f"  meshd: OK on both, a={addrs['a']} b={addrs['b']} ({time.monotonic() - t0:.1f} s)")
    try:
        wait_for(f"a ping over meshd to {addrs['b']}", 30, lambda: ping_works(lab, addrs["b"]))
    except BenchError as e:
        raise BenchError(f"{e}; b's status: {json.dumps(status('b'))}") from None
    log(f"  meshd: ping across ({time.monotonic() - t0:.1f} s)")

    # The numbers are for the path asked for: a relayed start would measure the controller.
    def on_path() -> bool:
        peers = (status("a") or {}).get("peers", [])
        return bool(peers) and all(p.get("path") == want_path for p in peers)

    try:
        wait_for(f"a {want_path} path from a to b", 30, on_path)
    except BenchError as e:
        peers = (status("a") or {}).get("peers")
        raise BenchError(f"{e}; a's peers: {json.dumps(peers)}") from None
    log(f"  meshd: {want_path} path ({time.monotonic() - t0:.1f} s)")

    # Its TUN writes coalesce datagrams, so b's daemon counts the packets it opened instead.
    def opened() -> int:
        workers = (status("b") or {}).get("packet_workers")
        if not workers:
            raise BenchError("b's `meshd status --json` has no packet_workers")
        return sum(int(w["from_peers"]) for w in workers)

    lab.delivered[addrs["b"]] = opened

    # Each side's endpoint for the other (the relay, when relayed): every host address is a
    # candidate, boringtun's included, and a number measured through boringtun's tunnel
    # would be no number at all.
    def path_state() -> dict[str, dict]:
        states = {}
        for side in "ab":
            peers = (status(side) or {}).get("peers") or [{}]
            peer = peers[0]
            states[side] = {k: peer.get(k) for k in ("path_changes", "last_handshake_s")}
            states[side]["endpoint"] = (peer.get("relay") if want_path == "relay"
                                        else peer.get("endpoint"))
        return states

    lab.path_state[addrs["b"]] = path_state
    return addrs["b"]


SETUP: dict[str, Callable[[Lab, argparse.Namespace], str]] = {
    "raw": setup_raw,
    "boringtun": setup_boringtun,
    "meshd": setup_meshd,
    "meshd-relay": setup_meshd_relay,
}


# --- the traffic -------------------------------------------------------------------------


def iperf(lab: Lab, dst: str, seconds: int, extra: list[str]) -> dict:
    """One iperf3 test from a to dst; the client's JSON (which carries the receiver's
    summary too). A one-off server per test: a failed test cannot wedge the next one."""
    server = lab.spawn("b", ["iperf3", "-s", "-1", "-B", dst, "-p", str(IPERF_PORT)],
                       "iperf3-server.log")
    try:
        def listening() -> bool:
            if server.poll() is not None:
                raise BenchError(f"the iperf3 server exited ({server.returncode}): "
                                 + tail(lab.path("iperf3-server.log"), 1))
            ss = lab.exec("b", ["ss", "-Hltn", "sport", "=", f":{IPERF_PORT}"])
            return bool(ss.stdout.strip())

        wait_for("the iperf3 server", 10, listening)
        out = lab.exec("a", ["iperf3", "-c", dst, "-p", str(IPERF_PORT), "-t", str(seconds),
                             "-J", *extra], timeout=seconds + 30, check=False)
    finally:
        lab.stop(server)
    try:
        result = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"iperf3 {' '.join(extra)} to {dst}: no JSON "
                         f"({out.returncode}): {out.stderr.strip()[-500:]}") from None
    if out.returncode != 0 or "error" in result:
        raise BenchError(f"iperf3 {' '.join(extra)} to {dst}: "
                         f"{result.get('error', out.returncode)}")
    return result


def tcp1(lab: Lab, dst: str, seconds: int) -> dict[str, float]:
    """One TCP stream: what a single flow gets through the tunnel."""
    end = iperf(lab, dst, seconds, [])["end"]
    return {"tcp1_mbps": end["sum_received"]["bits_per_second"] / 1e6}


def tcp4(lab: Lab, dst: str, seconds: int) -> dict[str, float]:
    """Four TCP streams: whether the tunnel scales past one flow."""
    end = iperf(lab, dst, seconds, ["-P", "4"])["end"]
    return {"tcp4_mbps": end["sum_received"]["bits_per_second"] / 1e6}


def udp64(lab: Lab, dst: str, seconds: int) -> dict[str, float]:
    """Unlimited 64-byte UDP: the per-packet cost. Counted at the receiver, since the sender
    always manages far more than any path delivers: by iperf3's server ("received"), and as
    what the path handed to b's network stack ("into b"). The two differ when the server,
    sharing the CPUs with the path, cannot keep up and its socket overflows."""
    count = lab.delivered.get(dst) or (lambda: rx_packets(lab, dst))
    before = count()
    received = iperf(lab, dst, seconds, ["-u", "-l", "64", "-b", "0"])["end"]["sum_received"]
    delivered = count() - before
    packets, lost = received["packets"], received["lost_packets"]
    return {
        "udp64_kpps": (packets - lost) / received["seconds"] / 1e3,
        "udp64_loss_pct": 100.0 * lost / packets if packets else 100.0,
        "udp64_delivered_kpps": delivered / received["seconds"] / 1e3,
    }


def rx_packets(lab: Lab, address: str) -> int:
    """The receive counter of the interface in b that holds `address`: for the veth what
    arrived, for boringtun's TUN what it wrote (one packet per write)."""
    links = json.loads(lab.exec("b", ["ip", "-j", "addr", "show"]).stdout)
    for link in links:
        if any(a.get("local") == address for a in link.get("addr_info", [])):
            shown = lab.exec("b", ["ip", "-j", "-s", "link", "show", "dev", link["ifname"]])
            return int(json.loads(shown.stdout)[0]["stats64"]["rx"]["packets"])
    raise BenchError(f"no interface in b holds {address}")


def rtt_interleaved(lab: Lab, targets: dict[str, str],
                    rnd: int) -> dict[str, dict[str, float] | BenchError]:
    """PING_COUNT echoes PING_INTERVAL apart over every path at once, interleaved: one ping
    per path, each started a share of the interval after the one before, so an echo over one
    path falls between echoes over the others. A round trip takes a fraction of a
    millisecond and the host's noisy moments (steal time, another process) last longer: this
    way they hit every path alike, where one path measured after another can meet a moment
    the others missed. The order rotates every round. Per path the median RTT, or a
    BenchError."""
    order = list(targets)
    order = order[(rnd - 1) % len(order):] + order[:(rnd - 1) % len(order)]
    procs = {}
    for k, path in enumerate(order):
        if k:
            time.sleep(PING_INTERVAL / len(order))
        procs[path] = lab.spawn("a", ["ping", "-n", "-c", str(PING_COUNT), "-i",
                                      str(PING_INTERVAL), "-W", "1", targets[path]],
                                f"ping-{path}-{rnd}.log")
    results: dict[str, dict[str, float] | BenchError] = {}
    for path, proc in procs.items():
        try:
            proc.wait(timeout=PING_COUNT * PING_INTERVAL + 10)
        except subprocess.TimeoutExpired:
            pass
        lab.stop(proc)
        out = lab.path(f"ping-{path}-{rnd}.log").read_text(errors="replace")
        times = [float(t) for t in re.findall(r"time=([\d.]+) ms", out)]
        if times:
            results[path] = {"rtt_ms": statistics.median(times)}
        else:
            summary = (out.strip().splitlines() or ["no output"])[-1]
            results[path] = BenchError(f"ping {targets[path]}: no replies ({summary})")
    return results


TESTS: dict[str, Callable[[Lab, str, int], dict[str, float]]] = {
    "tcp1": tcp1,
    "tcp4": tcp4,
    "udp64": udp64,
}
# Tests that measure every path at once (see rtt_interleaved).
TESTS_TOGETHER: dict[str, Callable[[Lab, dict[str, str], int],
                                    dict[str, dict[str, float] | BenchError]]] = {
    "ping": rtt_interleaved,
}
TEST_NAMES = [*TESTS, *TESTS_TOGETHER]

# Correctness check: the receiver prints the byte count and sha256 of what it got, the
# sender those of what it sent (random bytes); both run with the real interpreter.
RECEIVER = r"""
import hashlib, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
s.settimeout(30)
c, _ = s.accept()
c.settimeout(30)
h, n = hashlib.sha256(), 0
while b := c.recv(1 << 20):
    h.update(b)
    n += len(b)
c.close()
print(n, h.hexdigest())
"""

SENDER = r"""
import hashlib, os, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = os.urandom(n)
deadline = time.monotonic() + 10
while True:
    try:
        s = socket.create_connection((host, port), timeout=5)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
s.settimeout(30)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
s.recv(1)  # the receiver closes once it has read everything
print(n, hashlib.sha256(data).hexdigest())
"""


def check_transfer(lab: Lab, dst: str) -> dict:
    """Sends CHECK_BYTES random bytes from a to dst over TCP and compares sha256 at both
    ends: a tunnel that is fast but corrupts or drops data must not pass."""
    receiver = lab.spawn("b", [sys.executable, "-c", RECEIVER, dst, str(CHECK_PORT)],
                         "check-receiver.log")
    sender = lab.spawn("a", [sys.executable, "-c", SENDER, dst, str(CHECK_PORT),
                             str(CHECK_BYTES)], "check-sender.log")
    t0 = time.monotonic()
    lines = {}
    for name, proc in (("sender", sender), ("receiver", receiver)):
        try:
            proc.wait(max(1.0, 60 - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            raise BenchError(f"correctness check: the {name} did not finish within 60 s") from None
        text = lab.path(f"check-{name}.log").read_text(errors="replace")
        if proc.returncode != 0:
            raise BenchError(f"correctness check: the {name} failed:\n{text.strip()[-1000:]}")
        lines[name] = (text.strip().splitlines() or [""])[-1].split()
        lab.stop(proc)
    seconds = time.monotonic() - t0
    sent, got = lines["sender"], lines["receiver"]
    if len(sent) != 2 or len(got) != 2:
        raise BenchError(f"correctness check: unexpected output: sender {sent}, receiver {got}")
    result = {"bytes_sent": int(sent[0]), "sha256_sent": sent[1],
              "bytes_received": int(got[0]), "sha256_received": got[1], "seconds": seconds}
    result["ok"] = sent == got and int(got[0]) == CHECK_BYTES
    return result


# --- setup, results, main ----------------------------------------------------------------


def cargo_bin(name: str) -> str | None:
    """A tool on PATH or in cargo's bin directory (sudo usually drops ~/.cargo/bin)."""
    found = shutil.which(name)
    if found:
        return found
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    candidate = cargo_home / "bin" / name
    return str(candidate) if candidate.is_file() else None


def install(argv: list[str], why: str) -> None:
    """Runs an installer with its output on stderr (it takes a while: show progress)."""
    log(f"installing: {' '.join(argv)} ({why})")
    if subprocess.run(argv, stdout=sys.stderr, stdin=subprocess.DEVNULL).returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` failed")


def ensure_boringtun(skip_install: bool) -> str:
    """boringtun-cli's path and `wg` available; installed with cargo and apt-get unless
    --skip-install."""
    if cargo_bin("boringtun-cli") is None:
        cargo = cargo_bin("cargo")
        if skip_install or cargo is None:
            raise BenchError("boringtun-cli is not installed: "
                             "cargo install boringtun-cli --locked")
        install([cargo, "install", "boringtun-cli", "--locked"], "a few minutes")
    if shutil.which("wg") is None:
        if skip_install or shutil.which("apt-get") is None:
            raise BenchError("wg is not installed: apt-get install -y wireguard-tools")
        install(["apt-get", "install", "-y", "wireguard-tools"], "for wg")
    exe = cargo_bin("boringtun-cli")
    if exe is None:
        raise BenchError("boringtun-cli is still missing after `cargo install`")
    return exe


def loadavg() -> str:
    """The 1, 5 and 15 min load averages: a busy machine explains odd numbers."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def fmt(value: float | None) -> str:
    """Three significant digits, whole numbers from 100 up; '-' for no value."""
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def ratio(num: float | None, den: float | None) -> float | None:
    """num/den, or None when either is missing or den is zero."""
    if num is None or den is None or den == 0:
        return None
    return num / den


def summarize(samples: list[dict], paths: list[str]) -> dict[str, dict[str, dict]]:
    """Per metric and path: the median, min, max and the values themselves."""
    summary: dict[str, dict[str, dict]] = {}
    for key, _, _ in METRICS:
        for path in paths:
            values = [s["metrics"][key] for s in samples
                      if s["path"] == path and key in s.get("metrics", {})]
            if values:
                summary.setdefault(key, {})[path] = {
                    "median": statistics.median(values), "min": min(values),
                    "max": max(values), "values": values}
    return summary


def print_table(summary: dict, paths: list[str]) -> dict[str, float | None]:
    """The medians side by side, "median (min-max)" when there are several rounds, and
    meshd/boringtun; the ratios it printed."""
    def cell(key: str, path: str) -> str:
        s = summary.get(key, {}).get(path)
        if s is None:
            return "-"
        if len(s["values"]) == 1:
            return fmt(s["median"])
        return f"{fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])})"

    def median(key: str, path: str) -> float | None:
        return summary.get(key, {}).get(path, {}).get("median")

    show_ratio = "meshd" in paths and "boringtun" in paths
    show_relay = "meshd" in paths and "meshd-relay" in paths
    header = (["metric", "unit", *paths] + (["meshd/boringtun"] if show_ratio else [])
              + (["relay/direct"] if show_relay else []))
    rows, ratios = [], {}
    for key, label, unit in METRICS:
        row = [label, unit, *(cell(key, p) for p in paths)]
        if show_ratio:
            ratios[key] = ratio(median(key, "meshd"), median(key, "boringtun"))
            row.append(fmt(ratios[key]))
        if show_relay:
            ratios[f"relay_{key}"] = ratio(median(key, "meshd-relay"), median(key, "meshd"))
            row.append(fmt(ratios[f"relay_{key}"]))
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))))
    if show_ratio and "raw" in paths:
        added = {p: None if median("rtt_ms", p) is None or median("rtt_ms", "raw") is None
                 else median("rtt_ms", p) - median("rtt_ms", "raw")
                 for p in ("boringtun", "meshd")}
        ratios["rtt_added"] = ratio(added["meshd"], added["boringtun"])
        print(f"RTT added over raw: boringtun +{fmt(added['boringtun'])} ms, "
              f"meshd +{fmt(added['meshd'])} ms, meshd/boringtun {fmt(ratios['rtt_added'])}")
    return ratios


def measure_one(measure: Callable[[Lab, str, int], dict[str, float]], test: str, lab: Lab,
                target: str, seconds: int) -> dict[str, float] | BenchError:
    """One test over one path: its metrics, or what went wrong."""
    try:
        return measure(lab, target, seconds)
    except BenchError as e:
        return e
    except KeyError as e:
        return BenchError(f"{test}: iperf3's JSON has no {e}")


def bench(lab: Lab, args: argparse.Namespace) -> int:
    """Sets up every path, runs the rounds, prints the table; 0 if every run (and the
    correctness check) passed."""
    load_before = loadavg()
    lab.build()
    log(f"lab: namespaces {' '.join(lab.namespaces)}, veth {VETH_IP['a']} <-> {VETH_IP['b']}, "
        f"dir {lab.dir}")
    targets, setup_s = {}, {}
    for path in args.paths:
        t0 = time.monotonic()
        targets[path] = SETUP[path](lab, args)
        setup_s[path] = time.monotonic() - t0
        log(f"{path}: ready, traffic to {targets[path]} (setup {setup_s[path]:.1f} s)")

    samples = []
    for rnd in range(1, args.rounds + 1):
        for test in args.tests:
            def path_state(path: str) -> dict[str, dict] | None:
                probe = lab.path_state.get(targets.get(path, ""))
                return probe() if probe else None

            def record(path: str, outcome: dict[str, float] | BenchError,
                       before: dict[str, dict] | None = None) -> None:
                sample: dict = {"round": rnd, "test": test, "path": path}
                if isinstance(outcome, BenchError):
                    sample["error"] = str(outcome)
                else:
                    sample["metrics"] = outcome
                after = path_state(path)
                if after is not None:
                    sample["path_state"] = {"before": before, "after": after}
                    off = {side: st["endpoint"] for states in (before, after) if states
                           for side, st in states.items()
                           if not st["endpoint"]
                           or st["endpoint"].rsplit(":", 1)[0] not in VETH_IP.values()}
                    moved = before and any(before[side]["path_changes"] !=
                                           after[side]["path_changes"] for side in after)
                    if off:
                        sample["error"] = (f"{path} sent over {off}, not the veth "
                                           f"(the numbers measure another path)")
                    elif moved:
                        sample["error"] = (f"{path}'s endpoint moved during the run: "
                                           f"{before} -> {after}")
                samples.append(sample)
                shown = sample.get("error") or "  ".join(
                    f"{k}={fmt(v)}" for k, v in sample["metrics"].items())
                log(f"round {rnd}/{args.rounds} {test:<5} {path:<9} {shown}")

            if test in TESTS_TOGETHER:
                together = TESTS_TOGETHER[test](lab, {p: targets[p] for p in args.paths}, rnd)
                for path in args.paths:
                    record(path, together[path])
            else:
                for path in args.paths:
                    before = path_state(path)
                    record(path, measure_one(TESTS[test], test, lab, targets[path], args.seconds),
                           before)

    check = None
    if args.quick:
        try:
            check = check_transfer(lab, targets["meshd"])
            log(f"correctness check: {check['bytes_received']} of {CHECK_BYTES} bytes over meshd "
                f"in {check['seconds']:.1f} s, sha256 {'matches' if check['ok'] else 'DIFFERS'}")
        except BenchError as e:
            check = {"ok": False, "error": str(e)}
    load_after = loadavg()

    summary = summarize(samples, args.paths)
    print(f"\nmeshd netns benchmark: {args.rounds} round(s) x {args.seconds} s per run, "
          f"paths {','.join(args.paths)}; medians (min-max)")
    ratios = print_table(summary, args.paths)
    print(f"cpus {os.cpu_count()}; loadavg before {load_before}, after {load_after}; "
          f"setup " + ", ".join(f"{p} {s:.1f} s" for p, s in setup_s.items()))
    failed = [s for s in samples if "error" in s]
    for s in failed:
        print(f"FAILED: round {s['round']} {s['test']} {s['path']}: {s['error']}")
    if check is not None and not check["ok"]:
        print(f"FAILED: correctness check over meshd: {check}")

    if args.json:
        Path(args.json).write_text(json.dumps({
            "config": {"seconds": args.seconds, "rounds": args.rounds, "paths": args.paths,
                       "quick": args.quick, "meshd": args.meshd,
                       "boringtun_threads": args.boringtun_threads},
            "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before,
                        "loadavg_after": load_after},
            "setup_seconds": setup_s, "targets": targets, "samples": samples,
            "summary": summary, "ratios_meshd_over_boringtun": ratios,
            "correctness_check": check,
        }, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 1 if failed or (check is not None and not check["ok"]) else 0


def parse_args() -> argparse.Namespace:
    """The flags, with --quick's defaults filled in where the user gave none."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, help="length of each iperf3 run (default 5; --quick 2)")
    p.add_argument("--rounds", type=int, help="rounds over every path (default 3; --quick 1)")
    p.add_argument("--paths", help="comma-separated subset of raw,boringtun,meshd,meshd-relay "
                                   "(default all; --quick raw,meshd)")
    p.add_argument("--tests", help="comma-separated subset of " + ",".join(TEST_NAMES) +
                   " (default all)")
    p.add_argument("--quick", action="store_true",
                   help="1 round of 2 s, and a byte-exact 20 MB transfer over meshd (for CI)")
    p.add_argument("--meshd", default=str(REPO / "target" / "release" / "meshd"),
                   help="meshd binary (default: target/release/meshd)")
    p.add_argument("--meshd-workers", type=int,
                   help="packet workers per meshd daemon (default: meshd's, one per core)")
    p.add_argument("--boringtun-threads", type=int, default=4,
                   help="boringtun-cli --threads (default 4, boringtun's own default)")
    p.add_argument("--json", metavar="FILE", help="write every sample and the medians here")
    p.add_argument("--keep", action="store_true",
                   help="leave the namespaces and processes running, for debugging")
    p.add_argument("--skip-install", action="store_true",
                   help="do not install boringtun-cli or wireguard-tools when missing")
    args = p.parse_args()
    args.seconds = args.seconds or (2 if args.quick else 5)
    args.rounds = args.rounds or (1 if args.quick else 3)
    paths = args.paths or ("raw,meshd" if args.quick else ",".join(ALL_PATHS))
    args.paths = [x.strip() for x in paths.split(",") if x.strip()]
    unknown = [x for x in args.paths if x not in ALL_PATHS]
    if unknown or not args.paths:
        p.error(f"--paths: unknown {','.join(unknown) or '(empty)'}; choose from "
                f"{','.join(ALL_PATHS)}")
    args.tests = [x.strip() for x in (args.tests or ",".join(TEST_NAMES)).split(",")
                  if x.strip()]
    unknown = [x for x in args.tests if x not in TEST_NAMES]
    if unknown or not args.tests:
        p.error(f"--tests: unknown {','.join(unknown) or '(empty)'}; choose from "
                f"{','.join(TEST_NAMES)}")
    if args.quick and "meshd" not in args.paths:
        p.error("--quick's correctness check runs over meshd: include it in --paths")
    if args.seconds <= 0 or args.rounds <= 0:
        p.error("--seconds and --rounds must be positive")
    return args


def preflight(args: argparse.Namespace) -> None:
    """Fails early, with the fix, on what would otherwise fail half-way through setup."""
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespaces, veth, TUN): run it with sudo")
    for tool in ("ip", "ss", "iperf3", "ping"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed")
    if "meshd" in args.paths or "meshd-relay" in args.paths:
        meshd = Path(args.meshd)
        if not meshd.is_file():
            raise BenchError(f"no meshd binary at {meshd}: run `cargo build --release -p meshd` "
                             "(or pass --meshd PATH)")
        args.meshd = str(meshd.resolve())
    if "boringtun" in args.paths:
        args.boringtun_exe = ensure_boringtun(args.skip_install)


def main() -> int:
    """Runs the benchmark; the lab is removed on every way out unless --keep."""
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # the table stays in order with stderr in CI logs
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, Signals.handler)
    lab = Lab()
    status = 1
    try:
        preflight(args)
        status = bench(lab, args)
        if status != 0:
            lab.log_tails()
    except BenchError as e:
        log(f"bench.py: {e}")
        lab.log_tails()
    except Interrupted as e:
        log(f"bench.py: {e}: stopping")
        status = 128 + e.signum
    finally:
        if args.keep:
            lab.describe_kept()
        else:
            lab.cleanup()
    return status


if __name__ == "__main__":
    sys.exit(main())
