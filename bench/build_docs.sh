#!/usr/bin/env bash
# docs/benchmarks.md = a header + the section files of docs/bench/, in reading order.
set -euo pipefail
cd "$(dirname "$0")/.."
{
cat <<'HDR'
# Benchmarks

All numbers on this page were measured on the project's 2-core x86-64 CPU machine (AVX-512
with BF16, 24 GiB, no GPU; no GPU was lent to these sessions). Two kinds of sections:

- **Quiet machine** (second session, marked so): nothing else ran during the measurement.
- **Shared machine** (first session): about seven jobs shared the two cores (load average
  10-22), so absolute times there are inflated and noisy; every comparison with a peer
  library was measured *in one run*, with interleaved repeats, and is reported as a ratio.

Each section names its command; re-run it before quoting absolute numbers. The section sources
are in `docs/bench/` (one file per topic); this page is their concatenation
(`bash bench/build_docs.sh`).

Contents: accuracy tables (`medseg benchmark` on PH2, ACDC, DRIVE, BUSI, ISBI-2012) · training
end to end · U-Net vs smp and MONAI · data pipeline · losses · metrics · model zoo · BEFUnet ·
`medseg benchmark` kill/restart on PH2.

HDR
for f in accuracy training unet data losses metrics models befunet benchmark; do
  echo; echo "---"; echo; cat "docs/bench/$f.md"
done
} > docs/benchmarks.md
