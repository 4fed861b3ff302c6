"""Cross-field rules for a parsed plex: errors block, warnings are shown. Pure."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from plex.model.plex import LABEL_RE, Plex, Role
from plex.model.reboot import kured_enabled, kured_window
from plex.plexfile.yamlfile import dotted

# Incus instance names and DNS labels: 63 characters.
MAX_NODE_NAME = 63


@dataclass(frozen=True)
class Problem:
    loc: tuple[str | int, ...]
    message: str
    severity: Literal["error", "warning"] = "error"

    @property
    def path(self) -> str:
        return dotted(self.loc)


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def check_plex(plex: Plex) -> list[Problem]:
    problems: list[Problem] = []
    err = problems.append
    net_cfg = plex.network

    try:
        net = ipaddress.ip_network(net_cfg.cidr, strict=False)
    except ValueError:
        return [Problem(("network", "cidr"), f"'{net_cfg.cidr}' is not a CIDR like 10.77.0.0/24")]
    if "/" not in net_cfg.cidr:
        return [Problem(("network", "cidr"), f"'{net_cfg.cidr}' has no prefix length (/24)")]

    # Usable host numbers: skip network and broadcast addresses on IPv4 networks that have them.
    first_host, last_host = (
        (1, net.num_addresses - 2) if net.prefixlen < 31 else (0, net.num_addresses - 1)
    )

    ranges: list[tuple[Role, int, int]] = []
    for role, rc in plex.roles.items():
        if rc.capacity is not None and rc.capacity < rc.count:
            err(
                Problem(
                    ("roles", role.value, "capacity"),
                    f"capacity {rc.capacity} is below count {rc.count}",
                )
            )
        if rc.reserved == 0:
            continue
        # The reserved range (capacity) is what identity and images are made for.
        lo, hi = rc.offset, rc.offset + rc.reserved - 1
        if lo < first_host or lo > last_host:
            err(
                Problem(
                    ("roles", role.value, "offset"),
                    f"host number {lo} is outside {net} (usable {first_host}..{last_host})",
                )
            )
            continue
        if hi > last_host:
            field = "count" if rc.reserved == rc.count else "capacity"
            err(
                Problem(
                    ("roles", role.value, field),
                    f"{rc.reserved} nodes from host {lo} do not fit in {net} "
                    f"(room for {last_host - lo + 1})",
                )
            )
            continue
        ranges.append((role, lo, hi))

    for i, (ra, alo, ahi) in enumerate(ranges):
        for rb, blo, bhi in ranges[i + 1 :]:
            if alo <= bhi and blo <= ahi:
                err(
                    Problem(
                        ("roles", rb.value, "offset"),
                        f"range {blo}..{bhi} overlaps role {ra.value} ({alo}..{ahi})",
                    )
                )

    def in_ranges(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Role | None:
        hostnum = int(addr) - int(net.network_address)
        for role, lo, hi in ranges:
            if lo <= hostnum <= hi:
                return role
        return None

    for field in ("gateway", "vip"):
        value = getattr(net_cfg, field)
        if value is None:
            continue
        addr = _ip(value)
        if addr is None:
            err(Problem(("network", field), f"'{value}' is not an IP address"))
        elif addr not in net:
            err(Problem(("network", field), f"{value} is outside {net}"))
        elif not first_host <= int(addr) - int(net.network_address) <= last_host:
            err(
                Problem(("network", field), f"{value} is the network or broadcast address of {net}")
            )
        elif (holder := in_ranges(addr)) is not None:
            err(Problem(("network", field), f"{value} is inside the {holder.value} node range"))
    if net_cfg.gateway and net_cfg.vip and net_cfg.gateway == net_cfg.vip:
        err(Problem(("network", "vip"), "the VIP equals the gateway"))
    for i, d in enumerate(net_cfg.dns):
        if _ip(d) is None:
            err(Problem(("network", "dns", i), f"'{d}' is not an IP address"))

    for field in ("cluster_cidr", "service_cidr"):
        value = getattr(plex.kubernetes, field)
        try:
            kn = ipaddress.ip_network(value, strict=False)
        except ValueError:
            err(Problem(("kubernetes", field), f"'{value}' is not a CIDR"))
            continue
        if kn.overlaps(net) and field not in plex.kubernetes.model_fields_set:
            # A default the file never mentions: point at the line the user did write.
            err(
                Problem(
                    ("network", "cidr"),
                    f"{net} overlaps the default kubernetes.{field} {value}; "
                    f"move the node network or set kubernetes.{field}",
                )
            )
        elif kn.overlaps(net):
            err(Problem(("kubernetes", field), f"{value} overlaps the node network {net}"))

    k = plex.kubernetes
    if k.version and k.channel:
        err(Problem(("kubernetes", "channel"), "set either version or channel, not both"))
    if not k.version and not k.channel:
        err(Problem(("kubernetes", "version"), "set a version (v1.31.4+rke2r1) or a channel"))

    lb = plex.roles.lb
    if net_cfg.vip and (lb is None or lb.count == 0):
        err(Problem(("network", "vip"), "a virtual IP needs the lb role to hold it"))
    if lb is not None and lb.count > 0 and not net_cfg.vip:
        err(Problem(("roles", "lb"), "the lb role needs network.vip to serve"))
    reg = plex.roles.registry
    if reg is not None and reg.count > 1:
        err(Problem(("roles", "registry", "count"), "at most one registry node per plex"))
    if plex.roles.server.count == 0:
        err(Problem(("roles", "server", "count"), "a plex needs at least one server"))

    for role, rc in plex.roles.items():
        name = f"{plex.name}-{role.value}{max(rc.reserved, 1)}"
        if len(name) > MAX_NODE_NAME or not LABEL_RE.fullmatch(name):
            err(Problem(("name",), f"node name '{name}' is not a valid Incus/DNS name (max 63)"))
            break
        if rc.placement and len(rc.placement) > rc.count:
            err(
                Problem(
                    ("roles", role.value, "placement"),
                    f"{len(rc.placement)} members listed for {rc.count} nodes",
                )
            )
        members = plex.incus.members
        for i, m in enumerate(rc.placement):
            if members and m not in members:
                err(
                    Problem(("roles", role.value, "placement", i), f"'{m}' is not in incus.members")
                )
    for i, m in enumerate(plex.incus.members):
        if not LABEL_RE.fullmatch(m.lower()):
            err(Problem(("incus", "members", i), f"'{m}' is not a valid cluster member name"))
    fqdn = f"{plex.name}-server1.{net_cfg.domain}"
    if len(fqdn) > 253:
        err(Problem(("network", "domain"), "node FQDNs would exceed 253 characters"))

    if plex.incus.network_type == "macvlan" and net_cfg.addressing.value != "static":
        err(
            Problem(
                ("network", "addressing"),
                "a macvlan network has no DHCP reservations: use addressing: static",
            )
        )
    if plex.incus.remote != "local" and not (plex.incus.client_cert and plex.incus.client_key):
        err(Problem(("incus", "client_cert"), "a remote URL needs client_cert and client_key"))

    names = [u.name for u in plex.registry.upstreams]
    for i, n in enumerate(names):
        if names.index(n) != i:
            err(Problem(("registry", "upstreams", i, "name"), f"upstream '{n}' listed twice"))

    if kured_enabled(plex):
        try:
            kured_window(plex.reboot_windows, plex.kured.time_zone)
        except ValueError as e:
            err(Problem(("reboot_windows", "slots"), str(e)))

    servers = plex.roles.server.count
    if servers == 2:
        problems.append(
            Problem(
                ("roles", "server", "count"),
                "2 servers tolerate no more failures than 1 and add a second "
                "way to lose etcd quorum; use 1 or 3",
                "warning",
            )
        )
    elif servers > 2 and servers % 2 == 0:
        problems.append(
            Problem(
                ("roles", "server", "count"),
                f"{servers} servers tolerate no more failures than {servers - 1}; "
                "use an odd number",
                "warning",
            )
        )
    return problems


def warnings(plex: Plex) -> list[Problem]:
    return [p for p in check_plex(plex) if p.severity == "warning"]
