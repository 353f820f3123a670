"""Link faults of one testbed node: delay, loss and a rate limit on its cable.

Not every kernel has the netem qdisc (this project's CI kernel does not), so
each fault uses what is most widely built in:

- `netem-delay`: netem on the host end of the node's veth (traffic towards the
  node); refused with a clear message when the kernel lacks netem;
- `netem-loss` (percent): an nftables table inside the node's namespace that
  drops that share of packets in each direction (nf_tables and numgen are in
  every distribution kernel);
- `link-rate` (tc rate, e.g. `10mbit`; a bare number is Mbit/s): a token
  bucket (tbf) on both ends of the veth, so both directions are slow.

Every call re-applies the node's whole set of faults, so "off" is simply the
absence of a key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from kadeploy.errors import KadeployError
from kadeploy_testbed.layout import NodeSpec

Runner = Callable[..., Awaitable[tuple[int, str]]]

NFT_TABLE = "ktbfault"
TBF_BURST = "64kb"
TBF_LATENCY = "400ms"


def _rate(value: str) -> str:
    return f"{value}mbit" if value.replace(".", "", 1).isdigit() else value


def _delay(value: str) -> str:
    return value if value[-1].isalpha() else f"{value}ms"


def _percent(value: str) -> int:
    try:
        share = float(value.rstrip("%"))
    except ValueError:
        raise KadeployError(4, f"netem-loss {value!r}: expected a percentage (0-100)") from None
    if not 0 <= share <= 100:
        raise KadeployError(4, f"netem-loss {value!r}: expected a percentage (0-100)")
    return round(share)


def loss_ruleset(percent: int) -> str:
    """The nftables table that drops `percent` % of the node's packets each way."""
    rule = "drop" if percent >= 100 else f"numgen random mod 100 < {percent} drop"
    return (f"table inet {NFT_TABLE} {{\n"
            f"  chain input {{ type filter hook input priority 0; policy accept; {rule}; }}\n"
            f"  chain output {{ type filter hook output priority 0; policy accept; {rule}; }}\n"
            "}\n")


async def apply_link_faults(node: NodeSpec, faults: Mapping[str, str], run: Runner) -> None:
    """Make the node's link match `faults` (kinds absent or "off" are removed)."""
    delay, loss, rate = faults.get("netem-delay"), faults.get("netem-loss"), faults.get("link-rate")
    # towards the node: the host end of the veth
    if delay:
        args = ["tc", "qdisc", "replace", "dev", node.host_veth, "root", "netem", "delay", _delay(delay)]
        if rate:
            args += ["rate", _rate(rate)]
        status, output = await run(*args)
        if status != 0:
            if "unknown" in output.lower():
                raise KadeployError(15, "netem-delay: this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM); "
                                        "link-rate and netem-loss work without it")
            raise KadeployError(15, f"{' '.join(args)}: {output.strip()}")
    elif rate:
        await _checked(run, "tc", "qdisc", "replace", "dev", node.host_veth, "root", "tbf",
                       "rate", _rate(rate), "burst", TBF_BURST, "latency", TBF_LATENCY)
    else:
        await run("tc", "qdisc", "del", "dev", node.host_veth, "root")
    # from the node: its own eth0
    if rate:
        await _checked(run, "ip", "netns", "exec", node.netns, "tc", "qdisc", "replace", "dev", "eth0", "root",
                       "tbf", "rate", _rate(rate), "burst", TBF_BURST, "latency", TBF_LATENCY)
    else:
        await run("ip", "netns", "exec", node.netns, "tc", "qdisc", "del", "dev", "eth0", "root")
    # loss, both ways, inside the node
    await run("ip", "netns", "exec", node.netns, "nft", "delete", "table", "inet", NFT_TABLE)
    if loss and _percent(loss) > 0:
        await _checked(run, "ip", "netns", "exec", node.netns, "nft", "-f", "-",
                       input=loss_ruleset(_percent(loss)))


async def _checked(run: Runner, *args: str, input: str | None = None) -> None:
    status, output = await (run(*args, input=input) if input is not None else run(*args))
    if status != 0:
        raise KadeployError(15, f"{' '.join(args)}: {output.strip()}")
