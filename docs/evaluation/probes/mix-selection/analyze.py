import json, math, sys, glob
def load(f):
    d = json.load(open(f)); return d
grid = [(l/10, m/10) for l in range(11) for m in range(11) if l + m <= 10]
def mix(d, s, l, m):
    return [(1-l-m)*h + l*k + m*t for h,k,t in zip(d[f"head|{s}"], d[f"knn|{s}"], d[f"terms|{s}"])]
def acc(p, y): return sum((pi > 0.5) == (yi == 1) for pi, yi in zip(p, y)) / len(y)
def nll(p, y): return -sum(math.log(max(1e-6, pi if yi == 1 else 1 - pi)) for pi, yi in zip(p, y)) / len(y)
rows = {}
for f in sorted(glob.glob(sys.argv[1] + "/out-*.json")):
    d = load(f); name = f.split("out-")[1][:-5]
    y = {s: d[f"labels|{s}"] for s in ["dev", "held", "test", "train"]}
    res = {}
    for l, m in grid:
        res[(l, m)] = {s: (acc(mix(d, s, l, m), y[s]), nll(mix(d, s, l, m), y[s])) for s in ["dev", "held", "test", "train"]}
    def pick(score): return min(grid, key=lambda g: (score(res[g]), g))
    strategies = {
        "chosen(lib)": tuple(d["chosen"]),
        "nll dev+held 50/50": pick(lambda r: 0.5*r["dev"][1] + 0.5*r["held"][1]),
        "nll dev": pick(lambda r: r["dev"][1]),
        "nll held": pick(lambda r: r["held"][1]),
        "nll dev+train": pick(lambda r: 0.5*r["dev"][1] + 0.5*r["train"][1]),
        "acc dev": pick(lambda r: -r["dev"][0]),
        "equal thirds": None, "head": (0, 0), "mu .75": (0, 0.75), "mu .5": (0, 0.5), "l.25 mu.5": (0.25, 0.5),
    }
    print(name, "test acc by strategy:")
    for k, g in strategies.items():
        if k == "equal thirds": p = [(a+b+c)/3 for a,b,c in zip(d["head|test"], d["knn|test"], d["terms|test"])]; print(f"   {k:22s} {100*acc(p, y['test']):.1f}"); continue
        p = mix(d, "test", *g)
        print(f"   {k:22s} {str(g):12s} {100*acc(p, y['test']):.1f}  (dev acc {100*acc(mix(d,'dev',*g), y['dev']):.1f}, held acc {100*acc(mix(d,'held',*g), y['held']):.1f})")
    best = max(grid, key=lambda g: res[g]["test"][0]); print("   test-oracle", best, f"{100*res[best]['test'][0]:.1f}")
    for s in ["dev", "held", "test", "train"]:
        print(f"   parts on {s}: head {100*acc(d['head|'+s], y[s]):.1f} knn {100*acc(d['knn|'+s], y[s]):.1f} terms {100*acc(d['terms|'+s], y[s]):.1f}")

print("\nSUMMARY (test %, reading only)")
import statistics as st
rules = {"chosen": None, "head": (0,0), "knn": (1,0), "terms": (0,1), "nll dev only": "dev", "nll held only": "held", "thirds": (1/3,1/3), "λ0 μ.5": (0,0.5), "λ.2 μ.5": (0.2,0.5), "oracle(0.1 grid)": "oracle"}
table = {}
for f in sorted(glob.glob(sys.argv[1] + "/out-*.json")):
    d = json.load(open(f)); name = f.split("out-")[1][:-5]
    y = {s: d[f"labels|{s}"] for s in ["dev", "held", "test"]}
    def A(g): return 100*acc(mix(d, "test", *g), y["test"])
    row = {}
    for r, g in rules.items():
        if g is None: g = tuple(d["chosen"])
        elif g == "dev": g = min(grid, key=lambda q: (nll(mix(d,"dev",*q), y["dev"]), q))
        elif g == "held": g = min(grid, key=lambda q: (nll(mix(d,"held",*q), y["held"]), q))
        elif g == "oracle": g = max(grid, key=lambda q: A(q))
        row[r] = A(g)
    table[name] = row
names = sorted(table)
print("rule".ljust(18) + "".join(n.rjust(8) for n in names) + "   mean(ppo)  mean(no ppo)")
for r in rules:
    vals = [table[n][r] for n in names]
    ppo = [table[n][r] for n in names if n.endswith("-1")]; nop = [table[n][r] for n in names if n.endswith("-0")]
    print(r.ljust(18) + "".join(f"{v:8.1f}" for v in vals) + f"   {st.mean(ppo) if ppo else 0:8.2f}  {st.mean(nop) if nop else 0:8.2f}")
