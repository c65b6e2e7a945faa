"""How much retrieval could add to the same model, even with every choice read off the test split (see README.md).
Reads <dump>/SST-2-<seed>.tsv, which also holds embedding retrieval alone at k 1/4/16/64/256 x tau 0.02/0.1/1 and term
match alone at k 16/64/128/512 x tau 0.05/0.2/1, for the dev and test splits.
Usage: python3 ceiling.py <dump folder>   (needs numpy)"""
import sys,glob,itertools
import numpy as np
from dumps import load
grid=[(l/10,m/10) for l in range(11) for m in range(11) if l+m<=10]
seeds,devs={},{}
for f in sorted(glob.glob(sys.argv[1]+'/*.tsv')):
    d=load(f); y=np.array([r[0] for r in d['test']]); H=np.array([r[1] for r in d['test']])
    knn={k[9:]:np.array([r[1] for r in v]) for k,v in d.items() if k.startswith('test-knn-')}
    terms={k[11:]:np.array([r[1] for r in v]) for k,v in d.items() if k.startswith('test-terms-')}
    K0=np.array([r[2] for r in d['test']]); T0=np.array([r[3] for r in d['test']])
    s=f.split('-')[-1][:-4]; seeds[s]=(y,H,K0,T0,knn,terms)
    devs[s]=(np.array([r[0] for r in d['dev']]),np.array([r[1] for r in d['dev']]),{k[8:]:np.array([r[1] for r in v]) for k,v in d.items() if k.startswith('dev-knn-')},{k[10:]:np.array([r[1] for r in v]) for k,v in d.items() if k.startswith('dev-terms-')})
def acc(y,P): return (P.argmax(1)==y).mean()*100
def oracle(y,H,K,T): return max(acc(y,(1-l-m)*H+l*K+m*T) for l,m in grid)
print('seed head knn0 terms0 oracle(tuned k,tau)')
for s,(y,H,K0,T0,knn,terms) in seeds.items():
    print(s, '%.1f %.1f %.1f %.1f'%(acc(y,H),acc(y,K0),acc(y,T0),oracle(y,H,K0,T0)))
ks=list(next(iter(seeds.values()))[4].keys()); ts=list(next(iter(seeds.values()))[5].keys())
print('\nknn alone per config (mean over seeds), oracle lambda with head only, oracle with terms0')
for kc in ks:
    a=[acc(v[0],v[4][kc]) for v in seeds.values()]; o=[max(acc(v[0],(1-l)*v[1]+l*v[4][kc]) for l in np.arange(0,1.01,.1)) for v in seeds.values()]
    o2=[oracle(v[0],v[1],v[4][kc],v[3]) for v in seeds.values()]; hb=np.mean([acc(v[0],v[1]) for v in seeds.values()])
    print('%-12s alone %.1f  +head oracle %+.2f  +terms0 oracle %+.2f'%(kc,np.mean(a),np.mean(o)-hb,np.mean(o2)-hb))
print('\nterms alone per config, oracle mu with head, with knn0')
for tc in ts:
    a=[acc(v[0],v[5][tc]) for v in seeds.values()]; o=[max(acc(v[0],(1-m)*v[1]+m*v[5][tc]) for m in np.arange(0,1.01,.1)) for v in seeds.values()]
    o2=[oracle(v[0],v[1],v[2],v[5][tc]) for v in seeds.values()]; hb=np.mean([acc(v[0],v[1]) for v in seeds.values()])
    print('%-12s alone %.1f  +head oracle %+.2f  +knn0 oracle %+.2f'%(tc,np.mean(a),np.mean(o)-hb,np.mean(o2)-hb))
best=[]
hb=np.mean([acc(v[0],v[1]) for v in seeds.values()])
for kc in ks:
    for tc in ts:
        o=[oracle(v[0],v[1],v[4][kc],v[5][tc]) for v in seeds.values()]
        best.append((np.mean(o)-hb,kc,tc,o))
best.sort(reverse=True)
print('\nbest (k,tau)x(kt,taut) per-seed-oracle mix, mean gain over head:')
for b in best[:8]: print('%+.2f %s %s %s'%(b[0],b[1],b[2],' '.join('%.1f'%x for x in b[3])))
# same fixed mix for all seeds
for kc,tc in [(b[1],b[2]) for b in best[:3]]:
    g=max(grid,key=lambda g: np.mean([acc(v[0],(1-sum(g))*v[1]+g[0]*v[4][kc]+g[1]*v[5][tc]) for v in seeds.values()]))
    print('one mix for all seeds',kc,tc,g,'%+.2f'%(np.mean([acc(v[0],(1-sum(g))*v[1]+g[0]*v[4][kc]+g[1]*v[5][tc]) for v in seeds.values()])-hb))

# dev-only choice (32 rows): lowest NLL over every (knn config, terms config, lambda, mu)
def nll(y,P): return -np.log(np.clip(P[np.arange(len(y)),y],1e-6,1)).mean()
tot=[]
for s,(y,H,K0,T0,knn,terms) in seeds.items():
    yd,Hd,kd,td=devs[s]
    c=min(((nll(yd,(1-l-m)*Hd+l*kd[kc]+m*td[tc]),kc,tc,l,m) for kc in ks for tc in ts for l,m in grid))
    a=acc(y,(1-c[3]-c[4])*H+c[3]*knn[c[1]]+c[4]*terms[c[2]]); tot.append(a-acc(y,H))
    print('dev choice',s,c[1:],'%.1f (head %.1f)'%(a,acc(y,H)))
print('dev choice mean gain %+.2f'%np.mean(tot))
# leave-one-seed-out: one config+mix chosen on the other seeds' test accuracy
tot=[]
for s in seeds:
    others=[v for t,v in seeds.items() if t!=s]
    best=max(((np.mean([acc(v[0],(1-l-m)*v[1]+l*v[4][kc]+m*v[5][tc]) for v in others]),kc,tc,l,m) for kc in ks for tc in ts for l,m in grid))
    v=seeds[s]; a=acc(v[0],(1-best[3]-best[4])*v[1]+best[3]*v[4][best[1]]+best[4]*v[5][best[2]]); tot.append(a-acc(v[0],v[1]))
    print('LOSO',s,best[1:],'%.1f'%a)
print('LOSO mean gain %+.2f'%np.mean(tot))
# per seed, every choice (k, tau, k_terms, tau_terms, lambda, mu) best on the test split
tot=[]
for s,v in seeds.items():
    a=max(oracle(v[0],v[1],v[4][kc],v[5][tc]) for kc in ks for tc in ts); tot.append(a-acc(v[0],v[1])); print('per-seed full oracle',s,'%.1f'%a)
print('per-seed full oracle mean gain %+.2f'%np.mean(tot))
