"""Per-example gating against a fixed mix, on dumps of the harness's SST-2 retrikt students (see README.md).
Reads <dump>/SST-2-<seed>.tsv: per row of the few-shot dev split and of the test split, the head's, embedding
retrieval's and term match's class probabilities at the student's tuned k and temperatures.
Usage: python3 gate.py <dump folder>   (needs numpy)"""
import sys,glob,math,random
import numpy as np
import dumps
def load(f): return {s: v for s, v in dumps.load(f).items() if s in ('dev', 'test')}
def arr(rows):
    y=np.array([r[0] for r in rows]); H=np.array([r[1] for r in rows]); K=np.array([r[2] for r in rows]); T=np.array([r[3] for r in rows]); return y,H,K,T
def lg(P): P=np.clip(P,1e-6,1-1e-6); return np.log(P[:,1]/P[:,0])
def feats(H,K,T,kind):
    h,k,t=lg(H),lg(K),lg(T); nm=(np.abs(T-H).sum(1)<1e-7).astype(float)
    if kind=='lin': return np.stack([h,k,t],1)
    if kind=='gate': return np.stack([h,k,t,h*np.abs(h),k*np.abs(k),t*(1-nm),np.abs(h)*k,np.abs(h)*t],1)
def fitlr(X,y,l2=1.0,it=300):
    mu=X.mean(0); sd=X.std(0)+1e-9; Z=(X-mu)/sd; Z=np.hstack([Z,np.ones((len(Z),1))]); w=np.zeros(Z.shape[1])
    for _ in range(it):
        p=1/(1+np.exp(-Z@w)); g=Z.T@(p-y)/len(y)+l2*np.r_[w[:-1],0]/len(y); Hs=(Z.T*(p*(1-p)))@Z/len(y)+np.eye(len(w))*l2/len(y)
        w-=np.linalg.solve(Hs,g)
    return lambda X2: (np.hstack([(X2-mu)/sd,np.ones((len(X2),1))])@w)>0
def mixacc(y,H,K,T,l,m,loglin=False):
    if loglin: s=(1-l-m)*lg(H)+l*lg(K)+m*lg(T); return ((s>0)==y).mean()
    P=(1-l-m)*H+l*K+m*T; return (P.argmax(1)==y).mean()
grid=[(l/10,m/10) for l in range(11) for m in range(11) if l+m<=10]
res={}
for f in sorted(glob.glob(sys.argv[1]+'/*.tsv')):
    d=load(f); y,H,K,T=arr(d['test']); yd,Hd,Kd,Td=arr(d['dev'])
    n=len(y); idx=np.random.RandomState(0).permutation(n); folds=np.array_split(idx,10)
    out={}
    out['head']=mixacc(y,H,K,T,0,0)
    out['oracle fixed lin']=max(mixacc(y,H,K,T,l,m) for l,m in grid)
    out['oracle fixed loglin']=max(mixacc(y,H,K,T,l,m,True) for l,m in grid)
    for name,kind in [('cv stack lin','lin'),('cv stack gate','gate')]:
        pred=np.zeros(n,bool)
        for fo in folds:
            tr=np.setdiff1d(idx,fo); m=fitlr(feats(H[tr],K[tr],T[tr],kind),y[tr]); pred[fo]=m(feats(H[fo],K[fo],T[fo],kind))
        out[name]=(pred==y).mean()
    pred=np.zeros(n,bool)
    for fo in folds:
        tr=np.setdiff1d(idx,fo); best=max(grid,key=lambda g:mixacc(y[tr],H[tr],K[tr],T[tr],*g)); pred[fo]=(((1-sum(best))*H[fo]+best[0]*K[fo]+best[1]*T[fo]).argmax(1)==1)
    out['cv fixed lin']=(pred==y).mean()
    m=fitlr(feats(Hd,Kd,Td,'lin'),yd,l2=5); out['dev stack lin']=(m(feats(H,K,T,'lin'))==y).mean()
    res[f.split('/')[-1]]=out
keys=list(next(iter(res.values())).keys())
print('%-22s'%'seed', ' '.join('%9s'%k.split('-')[-1][:-4] for k in res), '   mean  gain')
for k in keys:
    v=[res[f][k]*100 for f in res]; hb=np.mean([res[f]['head']*100 for f in res])
    print('%-22s'%k,' '.join('%9.1f'%x for x in v),'%7.2f %+5.2f'%(np.mean(v),np.mean(v)-hb))
