"""Every scenario in this folder, run for real (netns backend; churn and SWIM's crash on Mininet too), judged by its
summary.json.

These need root: they build namespaces, attach BPF programs and start real node processes. Each run must also
leave nothing behind: no namespace, link, pinned BPF object or process carrying its run id.

The scenarios the parity suite also runs (`_shared.SIZES`: attack, basic, delay, loss, metadata, operations and
partition at 16 or 32 nodes, churn at 24) are judged here on the very run the parity suite made (`shared_run`,
conftest.py: the parity scaling only adds ``record_refreshes``).
"""

import json
from pathlib import Path

import pytest

from testbed import scenario as scenario_mod
from testbed.net.cleanup import find_leftovers
from testbed.runner import run_scenario

from _shared import SIZES, parity_scenario

HERE = Path(__file__).resolve().parent
pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf, pytest.mark.slow]


def run(name: str, tmp_path: Path, **overrides) -> tuple[dict, Path]:
    s = scenario_mod.load(str(HERE / name)).with_overrides(**overrides)
    out = tmp_path / s.name
    summary = run_scenario(s, out)
    meta = json.loads((out / "meta.json").read_text())
    left = find_leftovers(meta["run_id"])
    assert left.empty, f"run left resources behind: {left.summary()}"
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    for plot in s.plots:
        assert (out / f"{plot}.png").stat().st_size > 10_000
    return summary, out


def run_shared(name: str, shared_run) -> tuple[dict, Path]:
    """NAME.yaml at its parity size (`_shared.SIZES`: its own, but for churn and scale) on netns, the run the parity
    suite judges (made once, by whichever suite asks first)."""
    s = parity_scenario(name).with_overrides(backend="netns")
    assert s.nodes == SIZES[name]
    return shared_run(s)


def checks(summary: dict) -> dict:
    return {c["name"]: c for c in summary["checks"]}


def assert_passed(summary: dict, *names: str) -> None:
    got = checks(summary)
    for n in names:
        assert got[n]["passed"] is True, f"{n}: {got[n]['detail']}"
    assert summary["passed"] is True


# churn.yaml is the 64-node demo; the suite judges the parity suite's run of it at 24 (`_shared.SIZES`), once for
# both suites. At 64 nodes and a 1 s cycle the nodes keep both cores of these machines busy with heartbeats alone: a
# restarted node's process then took 4.5-7.3 s from its spawn to its first heartbeat, and two full-suite runs failed
# it with false deaths from starved processes (runs alone passed 12.7-14 s after the window, limit 20 s); 48 nodes
# passed, at 47 s of the suite's time for a second churn run.
def test_churn(shared_run):
    summary, out = run_shared("churn", shared_run)
    assert_passed(summary, "membership_converged", "metadata_converged", "no_false_deaths", "no_lost_update")
    assert summary["nodes"] == SIZES["churn"] and summary["xdp"] is True
    assert len(summary["rumors"]) == 4
    assert all(r["t100"] is not None for r in summary["rumors"])
    assert summary["packets"]["xdp_dropped"] > 0
    faults = [json.loads(line) for line in (out / "faults.jsonl").read_text().splitlines()]
    assert any(f["kind"] == "churn" for f in faults)
    events = (out / "events.jsonl").read_text()
    assert events.count('"state": "down"') >= 3  # the churn really crashed nodes


def test_churn_on_mininet(tmp_path):
    summary, _ = run("churn.yaml", tmp_path, backend="mininet", nodes=24)
    assert summary["backend"] == "mininet"
    assert_passed(summary, "membership_converged", "metadata_converged", "no_lost_update")


def test_swim_detects_a_crash_on_mininet(tmp_path):
    """SWIM on Mininet hosts: the two SIGKILLed nodes are suspected and then removed by every live member, and no
    live member is suspected or removed."""
    summary, out = run("protocols-crash.yaml", tmp_path, backend="mininet", nodes=16)
    assert summary["backend"] == "mininet"
    assert_passed(summary, "membership_converged", "no_false_deaths", "no_false_suspicions")
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    crashed = {n for f in (json.loads(line) for line in (out / "faults.jsonl").read_text().splitlines())
               if f["kind"] == "crash" for n in f["nodes"]}
    live = {e["node"] for e in events if e["kind"] == "started"} - crashed
    assert len(crashed) == 2 and len(live) == 14
    for kind in ("member_suspected", "member_removed"):
        seen = {(e["node"], e["name"]) for e in events if e["kind"] == kind}
        assert {(o, c) for o in live for c in crashed} <= seen, kind
        assert all(name in crashed for _, name in seen), kind


def test_partition_heals(shared_run):
    summary, out = run_shared("partition", shared_run)
    assert_passed(summary, "membership_converged", "metadata_converged", "no_false_deaths", "no_lost_update")
    # during the split each side really dropped the other: removals happened inside the partition window
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    window = next(json.loads(line) for line in (out / "faults.jsonl").read_text().splitlines()
                  if '"partition"' in line)
    removed = [e for e in events if e["kind"] == "member_removed" and window["start"] < e["t"] <= window["end"] + 1]
    assert len(removed) >= 16 * 16  # every node of one half removed (almost) every node of the other
    stats = json.loads((out / "stats.json").read_text())
    assert sum(n["faults"]["to_node_dropped_partition"] for n in stats["nodes"].values()) > 0


def test_loss_loses_no_update(shared_run):
    summary, out = run_shared("loss", shared_run)
    assert_passed(summary, "metadata_converged", "no_lost_update")
    assert len(summary["rumors"]) == 20
    stats = json.loads((out / "stats.json").read_text())
    window = next(json.loads(line) for line in (out / "faults.jsonl").read_text().splitlines()
                  if '"loss"' in line)
    a, b = window["network_start"], window["network_end"]
    lost, seen = b["to_node_dropped_loss"] - a["to_node_dropped_loss"], b["to_node_seen"] - a["to_node_seen"]
    assert 0.27 < lost / seen < 0.33, (lost, seen)  # 30 % of what crossed the network while the fault was on
    assert sum(n["faults"]["to_node_dropped_loss"] for n in stats["nodes"].values()) == b["to_node_dropped_loss"]


def test_attack_every_bad_packet_dropped(shared_run):
    summary, out = run_shared("attack", shared_run)
    assert_passed(summary, "bad_packets_dropped", "membership_converged", "metadata_converged", "no_lost_update")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["nodes"]["n1"]["dropped"].get("bad_mac", 0) >= 50  # forged: only the node can verify a MAC
    assert stats["nodes"]["n5"]["xdp"]["dropped"].get("foreign_cluster", 0) >= 50  # dropped in the kernel
    flood = stats["nodes"]["n6"]
    assert flood["xdp"]["dropped"].get("duplicate", 0) + flood["xdp"]["dropped"].get("stale", 0) >= 40_000


def test_concurrent_publishes_converge_on_the_highest(shared_run):
    summary, _ = run_shared("metadata", shared_run)
    assert_passed(summary, "metadata_converged", "no_lost_update")
    assert len(summary["rumors"]) == 10
    assert len({(r["version"], r["origin"]) for r in summary["rumors"]}) == 10  # no two publishes tie


# scale.yaml is 128 nodes; the suite runs it at 96 for the reason churn runs at 48: two full-suite runs failed the
# 128-node run with false deaths while its nodes were starved (node-side stale drops, heartbeats delayed by seconds,
# outnumbered duplicates), which a run of the suite on a busy two-core machine cannot tell from a regression.
SCALE_NODES = 96


def test_scale_96_nodes(tmp_path):
    summary, _ = run("scale.yaml", tmp_path, nodes=SCALE_NODES)
    assert_passed(summary, "membership_converged", "metadata_converged", "no_lost_update")
    assert summary["nodes"] == SCALE_NODES


def test_every_node_measures_how_long_it_handles_heartbeats_and_rumors(shared_run):
    """The stats records carry the handling times (``hb_handle_ms``) and the rumors' own (``md_handle_ms``,
    reported beside them by `testbed validate`): one sample per adoption by rumor, up to 16 per record, each the
    time from starting on the datagram to its forwards being sent; and the CPU times the host model reads."""
    _, out = run_shared("basic", shared_run)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    stats = [e for e in events if e["kind"] == "stats"]
    hb = [x for e in stats for x in e.get("hb_handle_ms", ())]
    md: dict[str, list[float]] = {}
    for e in stats:
        md.setdefault(e["node"], []).extend(e.get("md_handle_ms", ()))
    adopted: dict[str, int] = {}
    for e in events:
        if e["kind"] == "metadata_adopted" and e["via"] == "rumor":
            adopted[e["node"]] = adopted.get(e["node"], 0) + 1
    assert len(hb) > 100 and all(0.0 < x < 1000.0 for x in hb)
    assert all(len(md.get(n, ())) <= k for n, k in adopted.items())  # never more samples than adoptions
    assert sum(map(len, md.values())) >= 0.5 * sum(adopted.values()) > 0  # the last record's tail may be missing
    assert all(0.0 < x < 1000.0 for xs in md.values() for x in xs)
    # and the process's CPU time (thread_time) on heartbeats it took and on other datagrams, which the host model
    # charges: handling is CPU work (its CPU at most its wall time), and a duplicate costs less than a forward
    hb_cpu = sorted(x for e in stats for x in e.get("hb_cpu_ms", ()))
    other_cpu = sorted(x for e in stats for x in e.get("other_cpu_ms", ()))
    assert len(hb_cpu) > 100 and len(other_cpu) > 100
    assert 0.0 < hb_cpu[len(hb_cpu) // 2] <= sorted(hb)[len(hb) // 2] * 1.05
    assert other_cpu[len(other_cpu) // 2] < hb_cpu[len(hb_cpu) // 2]
    # and on each rumor adopted (its state file written and synced besides a heartbeat's work): one at most per
    # adoption, each at most its handling's wall time
    md_cpu: dict[str, list[float]] = {}
    for e in stats:
        md_cpu.setdefault(e["node"], []).extend(e.get("md_cpu_ms", ()))
    assert all(len(md_cpu.get(n, ())) <= k for n, k in adopted.items())
    assert sum(map(len, md_cpu.values())) >= 0.5 * sum(adopted.values())
    assert all(0.0 < x < 1000.0 for xs in md_cpu.values() for x in xs)
    assert sorted(x for xs in md_cpu.values() for x in xs)[sum(map(len, md_cpu.values())) // 2] <= \
        sorted(x for xs in md.values() for x in xs)[sum(map(len, md.values())) // 2] * 1.05
    # and how long heartbeats taken and rumors adopted waited from the kernel's receipt to the process starting on
    # them (SIOCGSTAMPNS): one wait per rumor adopted at most, each under a second on a 16-node run
    hb_wait = [x for e in stats for x in e.get("hb_wait_ms", ())]
    md_wait: dict[str, int] = {}
    for e in stats:
        md_wait[e["node"]] = md_wait.get(e["node"], 0) + len(e.get("md_wait_ms", ()))
    assert len(hb_wait) > 100 and all(0.0 <= x < 1000.0 for x in hb_wait)
    assert all(k <= adopted.get(n, 0) for n, k in md_wait.items()) and sum(md_wait.values()) > 0
    from testbed import analysis  # the simulator's wake-up can be drawn from them (sim.wakeup source)
    assert analysis.HOP_SOURCES["heartbeat_waits"][1](out) == sorted(hb_wait)
    # and the waits of datagrams that found their process idle (its wake-up, the ``wakeups`` source): no wait
    # behind the process's own backlog, so on the same scale as the heartbeats' waits (measured below 90 % host
    # load: medians within 10 % of each other, either above)
    wake = sorted(x for e in stats for x in e.get("wake_ms", ()))
    assert len(wake) > 100 and all(0.0 <= x < 1000.0 for x in wake)
    assert wake[len(wake) // 2] <= 1.5 * sorted(hb_wait)[len(hb_wait) // 2]
    assert analysis.HOP_SOURCES["wakeups"][1](out) == wake
    # and, for heartbeats straight from their origin, the hop's part before the wait: from the sequence (the send
    # time) to the kernel's receipt, which is shorter than the whole hop
    wire = sorted(x for e in stats for x in e.get("hb_wire_ms", ()))
    hops = sorted(x for e in stats for x in e.get("hb_hop_ms", ()))
    assert len(wire) > 50 and all(0.0 <= x < 1000.0 for x in wire)
    assert wire[len(wire) // 2] < hops[len(hops) // 2]


def test_same_scenario_without_xdp_converges_the_same(shared_run):
    on, _ = run_shared("basic", shared_run)
    off, _ = shared_run(parity_scenario("basic").with_overrides(backend="netns", xdp=False))
    for s in (on, off):
        assert_passed(s, "membership_converged", "metadata_converged", "no_false_deaths", "no_lost_update")
    assert on["xdp"] is True and off["xdp"] is False
    assert off["packets"]["xdp_dropped"] == 0 and on["packets"]["xdp_dropped"] > 0


def test_delay_slows_rumors_only_while_it_lasts(shared_run):
    summary, _ = run_shared("delay", shared_run)
    assert_passed(summary, "membership_converged", "metadata_converged", "no_false_deaths", "no_lost_update")
    slow, fast = summary["rumors"]
    assert slow["t50"] >= 0.05  # at least one 50 ms hop before half the nodes hold it
    assert fast["t50"] < 0.05 and fast["t50"] < slow["t50"]


def test_operations_with_the_broadcaster(shared_run):
    summary, out = run_shared("operations", shared_run)
    n = SIZES["operations"]
    last, joined, other_half = f"n{n - 1}", f"n{n}", f"n{n // 2}"  # leave: last; join: the next name; [50%, 50%]
    assert_passed(summary, "membership_converged", "metadata_converged", "no_false_deaths", "no_lost_update")
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    finals = {e["node"]: e for e in events if e["kind"] == "final"}
    assert last not in finals and joined in finals  # the last node left for good, one joined
    assert all(set(f["members"]) == set(finals) for f in finals.values())  # every final view is the live set
    removed = {(e["node"], e["name"]) for e in events if e["kind"] == "member_removed"}
    assert {(m, "n2") for m in ("n0", "n1")} <= removed  # stopped heartbeats: n2 expired, then came back
    assert (other_half, "n0") in removed and ("n0", other_half) in removed  # the nft partition cut both ways
    stats = json.loads((out / "stats.json").read_text())
    assert sum(v["broadcast"]["copies"] for v in stats["nodes"].values()) > 0  # rumors went through TC
    # the key rotation: three steps told to every running node, the paused n3 told the first as it resumed, and
    # not one datagram dropped for a MAC its receiver could not check (the joined node started on the final ring)
    told = [(e["node"], e["keys"]) for e in events if e["kind"] == "keys_op"]
    assert len(told) >= 3 * (n - 2) and ("n3", 2) in told and not any(m == joined for m, _ in told), told
    assert sum(v["dropped"].get("bad_mac", 0) for v in stats["nodes"].values()) == 0


# the in-kernel heartbeat plane (node: {kernel_heartbeats: true}) against the same runs without it (the parity
# suite's, shared): the same checks pass, and the kernel really took heartbeats
@pytest.mark.parametrize("name", ["attack", "churn", "loss", "partition", "scale"])
def test_the_kernel_heartbeat_plane_tells_the_same_membership_story(name, shared_run):
    off, _ = run_shared(name, shared_run)
    s = parity_scenario(name).with_overrides(backend="netns", node={"kernel_heartbeats": True})
    on, out = shared_run(s)
    assert json.loads((out / "meta.json").read_text())["kernel_heartbeats"] is True
    verdicts = lambda summary: {c["name"]: c["passed"] for c in summary["checks"]}  # noqa: E731
    assert verdicts(on) == verdicts(off), (on["checks"], off["checks"])
    assert on["passed"], on["checks"]
    nodes = json.loads((out / "stats.json").read_text())["nodes"]
    handled = sum(n["hbplane"]["handled"] for n in nodes.values())
    assert handled > 0, {k: n["hbplane"] for k, n in list(nodes.items())[:3]}
    # what it is for: the nodes' sockets wake for a fraction of the datagrams (measured 11-14x fewer on these three)
    assert on["packets"]["packets_in"] * 3 < off["packets"]["packets_in"], (on["packets"], off["packets"])
    print(f"{name}: the kernel took {handled} heartbeats; packets into the nodes {on['packets']} "
          f"(plane off: {off['packets']})")
