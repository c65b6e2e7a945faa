# Scores mix-selection rules on the probe's outputs (out-SEED-PPO.json in the folder given), test split, reading only.
import glob, json, math, statistics, sys

grid = [(l / 10, m / 10) for l in range(11) for m in range(11) if l + m <= 10]
def mix(d, s, l, m):
    return [(1 - l - m) * h + l * k + m * t for h, k, t in zip(d[f"head|{s}"], d[f"knn|{s}"], d[f"terms|{s}"])]
def acc(p, y): return sum((pi > 0.5) == (yi == 1) for pi, yi in zip(p, y)) / len(y)
def nll(p, y): return -sum(math.log(max(1e-6, pi if yi == 1 else 1 - pi)) for pi, yi in zip(p, y)) / len(y)

def lowest_nll(d, y, weights):  # the grid point of lowest weighted NLL over the named row sets; ties to the smaller point
    return min(grid, key=lambda g: (sum(w * nll(mix(d, s, *g), y[s]) for s, w in weights.items()), g))

# Each rule maps a probe output to the (λ, μ) it would choose.
rules = {
    "chosen": lambda d, y: tuple(d["chosen"]),
    "head": lambda d, y: (0, 0), "knn": lambda d, y: (1, 0), "terms": lambda d, y: (0, 1),
    "nll dev+held 50/50": lambda d, y: lowest_nll(d, y, {"dev": 0.5, "held": 0.5}),
    "nll dev only": lambda d, y: lowest_nll(d, y, {"dev": 1}),
    "nll held only": lambda d, y: lowest_nll(d, y, {"held": 1}),
    "nll dev+train": lambda d, y: lowest_nll(d, y, {"dev": 0.5, "train": 0.5}),
    "acc dev": lambda d, y: max(grid, key=lambda g: (acc(mix(d, "dev", *g), y["dev"]), [-x for x in g])),
    "thirds": lambda d, y: (1 / 3, 1 / 3), "λ0 μ.5": lambda d, y: (0, 0.5), "λ0 μ.75": lambda d, y: (0, 0.75),
    "λ.2 μ.5": lambda d, y: (0.2, 0.5), "λ.25 μ.5": lambda d, y: (0.25, 0.5),
    "oracle(0.1 grid)": lambda d, y: max(grid, key=lambda g: acc(mix(d, "test", *g), y["test"])),
}

table = {}
for f in sorted(glob.glob(sys.argv[1] + "/out-*.json")):
    d = json.load(open(f)); name = f.split("out-")[1][:-5]
    y = {s: d[f"labels|{s}"] for s in ["dev", "held", "test", "train"]}
    print(name, "test acc by rule:")
    table[name] = {}
    for rule, choose in rules.items():
        g = choose(d, y)
        a = {s: 100 * acc(mix(d, s, *g), y[s]) for s in ["test", "dev", "held"]}
        table[name][rule] = a["test"]
        print(f"   {rule:20s} ({g[0]:.2f}, {g[1]:.2f})  {a['test']:.1f}  (dev acc {a['dev']:.1f}, held acc {a['held']:.1f})")

print("\nSUMMARY (test %, reading only)")
names = sorted(table)
print("rule".ljust(20) + "".join(n.rjust(8) for n in names) + "   mean(ppo)  mean(no ppo)")
for rule in rules:
    ppo = [table[n][rule] for n in names if n.endswith("-1")]; plain = [table[n][rule] for n in names if n.endswith("-0")]
    print(rule.ljust(20) + "".join(f"{table[n][rule]:8.1f}" for n in names) +
          f"   {statistics.mean(ppo) if ppo else 0:8.2f}  {statistics.mean(plain) if plain else 0:8.2f}")
