"""Reads one dump of the probe's harness patch (<dump>/SST-2-<seed>.tsv): {split: [(label index, [p for the head or
the named part], [p embedding retrieval] or None, [p term match] or None)]}. Splits are "dev", "test" and
"<dev|test>-<part>-<k>-<tau>" for the parts' settings (their rows hold only the part's p, in the second place)."""
def load(f):
    d={}
    for i,l in enumerate(open(f)):
        if i==0: continue
        s,r,lab,h,k,t=l.rstrip('\n').split('\t')
        d.setdefault(s,[]).append((int(lab)-1,[float(x) for x in h.split(',')],[float(x) for x in k.split(',')] if k else None,[float(x) for x in t.split(',')] if t else None))
    return d
