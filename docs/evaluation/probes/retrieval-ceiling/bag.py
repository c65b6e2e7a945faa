"""Embedding-bag retrieval (IDF-weighted sum of the student's token embeddings as keys) against the head and the
library's retrieval parts, on dumps of the harness's SST-2 retrikt students (see README.md).
Usage: python3 bag.py <dump folder>   (needs numpy)"""
import sys,glob
import numpy as np
from dumps import load
def acc(y,P): return (P.argmax(1)==y).mean()*100
seeds={}
for f in sorted(glob.glob(sys.argv[1]+'/*.tsv')):
    d=load(f); s=f.split('-')[-1][:-4]
    y=np.array([r[0] for r in d['test']]); H=np.array([r[1] for r in d['test']]); K=np.array([r[2] for r in d['test']]); T=np.array([r[3] for r in d['test']])
    bag={k[9:]:np.array([r[1] for r in v]) for k,v in d.items() if k.startswith('test-bag-')}
    seeds[s]=(y,H,K,T,bag)
hb=np.mean([acc(v[0],v[1]) for v in seeds.values()])
print('seeds', list(seeds), 'head mean %.2f'%hb)
W=np.arange(0,1.01,0.1)
for bc in next(iter(seeds.values()))[4]:
    alone=[acc(v[0],v[4][bc]) for v in seeds.values()]
    # agreement with head
    agree=[(v[4][bc].argmax(1)==v[1].argmax(1)).mean()*100 for v in seeds.values()]
    o2=[max(acc(v[0],(1-b)*v[1]+b*v[4][bc]) for b in W) for v in seeds.values()]
    o4=[max(acc(v[0],(1-l-m-b)*v[1]+l*v[2]+m*v[3]+b*v[4][bc]) for l in W for m in W for b in W if l+m+b<=1+1e-9) for v in seeds.values()]
    print('%-10s alone %.1f  agrees with head %.1f  head+bag oracle %+.2f  4-way oracle %+.2f'%(bc,np.mean(alone),np.mean(agree),np.mean(o2)-hb,np.mean(o4)-hb))
agreeK=[(v[2].argmax(1)==v[1].argmax(1)).mean()*100 for v in seeds.values()]; agreeT=[(v[3].argmax(1)==v[1].argmax(1)).mean()*100 for v in seeds.values()]
print('embedding retrieval agrees with head %.1f, term match %.1f'%(np.mean(agreeK),np.mean(agreeT)))
