import threading, time, statistics, numpy as np, fastconv
rng = np.random.default_rng(0)
x = [rng.standard_normal((8, 64, 56, 56)).astype(np.float32) for _ in range(2)]
w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
def one(i):
    with fastconv.threads(1):
        fastconv.conv2d(x[i], w, padding=1)
def conc():
    t = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    [a.start() for a in t]; [a.join() for a in t]
def seq():
    one(0); one(1)
for f in (seq, conc): f()
res = {"seq": [], "conc": []}
for r in range(7):
    for name, f in (("seq", seq), ("conc", conc)):
        t0 = time.perf_counter(); f(); res[name].append(time.perf_counter() - t0)
print({k: f"{statistics.median(v)*1e3:.1f}ms" for k, v in res.items()})
