"""Exports graphs that dask.array / xarray build in dask/tests/test_order.py, for
forkgraph's tests/order.rs (Dask 2026.8, xarray 2026.9, zarr 3.1, numpy 2.4 in a venv).

    cp dask/tests/test_order.py .   # then make it import `order` and `diagnostics` from
                                    # recorder.py (beside this file) instead of dask.order
    REC_GRAPHS=1 python -m pytest test_order.py      # writes records.jsonl
    python export.py records.jsonl

The svd graph of test_connected_roots_deduplication_mem_usage (no `order` call upstream) is
recorded the same way by building it as that test does and calling recorder.order on it.
One file per graph: a header line with the pressure of Dask's own order, then one task per
line, `<key as JSON>\t<dependency line numbers>`; hashes in names cut to 4 hex digits."""
import json, re, sys
def short_name(s):
    return re.sub(r"[0-9a-f]{32}", lambda m: m.group(0)[:4], s)
def short(k):
    return [short_name(k[0])] + k[1:] if isinstance(k, list) else short_name(k)
want = {
  "test_array_store_final_order": "array_store_final_order",
  "test_anom_mean": "anom_mean",
  "test_xarray_8414": "xarray_8414",
  "test_flaky_array_reduction": "flaky_array_reduction",
  "test_stackstac": "stackstac",
}
seen = {}
out = {}
for l in open(sys.argv[1]):
    r = json.loads(l)
    t = r["test"].split("::")[1]
    base = t.split("[")[0]
    name = None
    if base in want:
        name = want[base]
    elif base == "test_array_vs_dataframe":
        name = "array_vs_dataframe_%s_%s" % ("optimized" if "True" in t else "raw", "array" if r["pressure"] > 20 else "dataframe")
    elif base == "test_reduce_with_many_common_dependents":
        n, nd, keep, opt = t.split("[")[1].rstrip("]").split("-")
        name = "reduce_with_many_common_dependents_%s_%s_%s_%s" % (n, nd, "keep" if keep == "True" else "nokeep", "opt" if opt == "True" else "raw")
    if name is None:
        continue
    if name == "flaky_array_reduction":
        name += "_%d" % sum(1 for k in out if k.startswith(name))
    elif name in out:
        continue
    ids = {json.dumps(k): i for i, (k, _) in enumerate(r["deps"])}
    lines = ["# dask pressure %d" % r["pressure"]]
    for k, ds in r["deps"]:
        lines.append(json.dumps(short(k), separators=(",", ":")) + "\t" + " ".join(str(ids[json.dumps(d)]) for d in ds))
    out[name] = "\n".join(lines) + "\n"
for name, text in out.items():
    here = __import__("os").path.dirname(__file__)
    open(__import__("os").path.join(here, "%s.txt" % name), "w").write(text)
    print(name, len(text))
