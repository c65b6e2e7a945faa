# Exploratory: term-match vote (TF-IDF cosine, top k, softmax(score/tau) over soft labels) over the seed-13 store,
# unigrams vs unigrams+bigrams, scored on 3000 gold SST-2 *training* sentences (not the test split).
import json, math, re, random, collections, sys
store=[]
for i,l in enumerate(open('/root/.cache/retrikt/work/extraction-SST-2-13-ppo0-s1-bad432e0b06c.jsonl')):
    if i==0: continue
    r=json.loads(l)
    if r.get('soft_label') and r.get('text'): store.append((r['text'], r['soft_label']))
tok=lambda s: re.findall(r"[a-z0-9']+|[^\sa-z0-9]", s.lower())
def feats(s, bi):
    t=[w for w in tok(s)]
    f=list(t)
    if bi: f+= [a+' '+b for a,b in zip(t,t[1:])]
    return collections.Counter(f)
rows=[l.rstrip('\n').split('\t') for l in open('/work/shared/data/SST-2/train.tsv')][1:]
random.seed(1); random.shuffle(rows); rows=rows[:3000]
for bi in (False, True):
    docs=[feats(t,bi) for t,_ in store]
    df=collections.Counter(); [df.update(d.keys()) for d in docs]
    N=len(docs); idf={w:math.log((1+N)/(1+c)) for w,c in df.items()}
    post=collections.defaultdict(list)
    for e,d in enumerate(docs):
        v={w:c*idf[w] for w,c in d.items()}; n=math.sqrt(sum(x*x for x in v.values())) or 1
        for w,x in v.items(): post[w].append((e,x/n))
    for k,tau in ((32,0.05),(128,0.05),(128,0.1),(128,0.2),(128,0.5),(512,0.1),(512,0.2),(2048,0.2)):
        correct=0
        for s,y in rows:
            q=feats(s,bi); v={w:c*idf[w] for w,c in q.items() if w in idf}; n=math.sqrt(sum(x*x for x in v.values())) or 1
            acc=collections.defaultdict(float)
            for w,x in v.items():
                for e,pw in post[w]: acc[e]+=x/n*pw
            top=sorted(acc.items(), key=lambda p:-p[1])[:k]
            if not top: continue
            m=max(sc for _,sc in top); ws=[math.exp((sc-m)/tau) for _,sc in top]; Z=sum(ws)
            p1=sum(w*store[e][1][1] for (e,_),w in zip(top,ws))/Z
            correct += (p1>0.5)==(y=='1')
        print('bigrams' if bi else 'unigrams', k, tau, round(100*correct/len(rows),1), flush=True)
