"""What a deployment costs: on-demand prices (estimates, dated) and the lines deploy shows.

Kept apart from deploy.py so the table is one place to update when AWS's prices move.
"""

from __future__ import annotations

# USD, on demand, Linux, from https://aws.amazon.com/ec2/pricing/on-demand/ and the EBS,
# ELB and VPC pricing pages as listed in 2025 (checked 2025-06). Taxes, data transfer and
# snapshots are not counted. Other types and regions: "unknown", with how to set it.
PRICES_CHECKED = "2025-06"
HOURLY_PRICES: dict[tuple[str, str], float] = {
    ("g4dn.xlarge", "us-east-1"): 0.526,
    ("g4dn.xlarge", "us-east-2"): 0.526,
    ("g4dn.xlarge", "us-west-2"): 0.526,
    ("g4dn.xlarge", "eu-west-1"): 0.587,
    ("g4dn.xlarge", "eu-central-1"): 0.658,
    ("g4dn.2xlarge", "us-east-1"): 0.752,
    ("g4dn.2xlarge", "us-west-2"): 0.752,
    ("g5.xlarge", "us-east-1"): 1.006,
    ("g5.xlarge", "us-west-2"): 1.006,
    ("g5.2xlarge", "us-east-1"): 1.212,
    ("g6.xlarge", "us-east-1"): 0.8048,
}
GP3_GIB_MONTH = 0.08  # gp3 storage, us-east-1
ALB_HOUR = 0.0225  # an Application Load Balancer, per hour
LCU_HOUR = 0.008  # one Load Balancer Capacity Unit, per hour (a light team load)
PUBLIC_IPV4_HOUR = 0.005  # any public IPv4 address, an Elastic IP attached or not
ECR_GB_MONTH = 0.10  # image storage in ECR
HOURS_PER_MONTH = 730


def hourly_price(instance_type: str, region: str) -> float | None:
    """The on-demand price of one host per hour (None: not in the table)."""
    return HOURLY_PRICES.get((instance_type, region))


def cost_lines(
    *,
    volume_gib: int,
    alb: bool,
    elastic_ip: bool,
    instance_type: str,
    region: str,
    hosts: int,
) -> list[str]:
    """The standing monthly cost of what the stack keeps while the hosts are stopped, and
    the price of a running host: estimates (prices and their date above)."""
    lines = [f"standing cost (estimates, USD, {region} prices of {PRICES_CHECKED}; hosts stopped):"]
    total = volume_gib * GP3_GIB_MONTH
    lines.append(
        f"  EBS volumes       {volume_gib} GiB x ${GP3_GIB_MONTH}/GiB-month = ${volume_gib * GP3_GIB_MONTH:.2f}/month"
    )
    if alb:
        alb_month = (ALB_HOUR + LCU_HOUR) * HOURS_PER_MONTH
        total += alb_month
        lines.append(
            f"  load balancer     (${ALB_HOUR}/h + 1 LCU ${LCU_HOUR}/h) x {HOURS_PER_MONTH} h = ${alb_month:.2f}/month"
        )
    if elastic_ip:
        ip_month = PUBLIC_IPV4_HOUR * HOURS_PER_MONTH
        total += ip_month
        lines.append(
            f"  Elastic IP        ${PUBLIC_IPV4_HOUR}/h x {HOURS_PER_MONTH} h = ${ip_month:.2f}/month"
        )
    lines.append(f"  ECR images        ${ECR_GB_MONTH}/GB-month of images pushed")
    lines.append(f"  total             ~${total:.2f}/month")
    price = hourly_price(instance_type, region)
    ip = "" if elastic_ip else f" + ${PUBLIC_IPV4_HOUR}/h for its public IPv4 address"
    if price is None:
        lines.append(
            f"a running host ({instance_type} in {region}): unknown (not in the price table of "
            "gpu_audio/host/prices.py): see https://aws.amazon.com/ec2/pricing/on-demand/ and set "
            "aws.hourly_price in server_config.json"
        )
    else:
        lines.append(
            f"a running host ({instance_type} in {region}, on demand): ${price}/h{ip}"
            + (f", {hosts} hosts ${price * hosts:.3f}/h" if hosts > 1 else "")
        )
    return lines
