"""BM25 over the chunks of a ragd data dir, scored on SciFact: a replica of
ragd's ranking in Python, to try ranking variants without building ragd
(docs/BENCHMARKS.md, rounds 8 and 9).

    ragd-bench --keep-data retrieval            # prints the kept data dir
    pip install PyStemmer
    python3 bench/replica/bm25_chunks.py <data-dir>/ragd.db [dataset-dir]

Variants: stop-words indexed or not (ragd's list, src/words.rs; questions
never use them), stemmer (Snowball `porter` = FTS5's Porter, `english` =
tantivy's), chunk lengths exact or as tantivy stores them (one byte,
`FIELD_NORMS_TABLE`). The idf is FTS5's (ln((N-n+.5)/(n+.5)), floored),
as ragd's statistics give tantivy (src/search/stats.rs); k1 1.2, b 0.75.
Documents are ranked by their best chunk among the top 50, as `ragd-bench
retrieval` does. Each variant is scored on the test split (the one
`ragd-bench` reports) and on the train split (809 other questions: a
check that a gain is not the test split's noise).
"""
import bisect, collections, glob, json, math, os, re, sqlite3, sys, unicodedata
import Stemmer
DB=sys.argv[1]
D=sys.argv[2] if len(sys.argv)>2 else '../shared/datasets/scifact'
ROOT=os.path.dirname(os.path.abspath(__file__))+'/../..'
src=open(ROOT+'/src/words.rs').read()
stop=set(m.group(1) for m in re.finditer(r'"([a-z\']+)"', src))
# tantivy's table of stored lengths, from the crate's source in cargo's cache.
code=open(glob.glob(os.path.expanduser('~/.cargo/registry/src/*/tantivy-0.27*/src/fieldnorm/code.rs'))[0]).read()
table=[int(x) for x in re.findall(r'^\s+(\d+),$', code, re.M)]
def quant(n):
    i=bisect.bisect_right(table,n)-1; return table[i]
con=sqlite3.connect(DB)
rows=con.execute("select c.rowid, d.filename, c.text, c.context from chunks c join documents d on d.id=c.document_id").fetchall()
queries={}
for l in open(D+'/queries.jsonl'):
    q=json.loads(l); queries[q['_id']]=q['text']
def qrels(split):
    out=collections.defaultdict(dict)
    for i,l in enumerate(open(D+'/qrels/'+split+'.tsv')):
        if i==0: continue
        a,b,c=l.strip().split('\t'); out[a][b]=int(c)
    return out
splits={s:qrels(s) for s in ['test','train']}
def fold(w): return ''.join(c for c in unicodedata.normalize('NFKD',w) if not unicodedata.combining(c))
def words(text, drop_stop):
    return [fold(w) for w in re.findall(r'[^\W_]+',text.lower())
            if len(w.encode())<64 and not (drop_stop and w in stop)]
def run(alg, drop_stop, q):
    st=Stemmer.Stemmer(alg)
    dt=[st.stemWords(words(r[3]+'\n'+r[2], drop_stop)) for r in rows]
    N=len(dt); lens=[q(len(t)) for t in dt]; avg=sum(lens)/N
    df=collections.Counter(); post=collections.defaultdict(list)
    for i,t in enumerate(dt):
        c=collections.Counter(t); df.update(c.keys())
        for w,f in c.items(): post[w].append((i,f))
    k1,b=1.2,0.75; out=[]
    for split in ['test','train']:
        ndcg=0; n=0
        for qid,rel in splits[split].items():
            asked=[]
            for w in re.findall(r'[^\W_]+',queries[qid].lower()):
                if w in stop or w in asked: continue
                asked.append(w)
            terms=st.stemWords([fold(w) for w in asked[:32]])
            sc=collections.defaultdict(float)
            for t in terms:
                nn=df.get(t,0)
                if nn==0: continue
                idf=max(math.log((N-nn+.5)/(nn+.5)),1e-6)
                for i,f in post[t]:
                    sc[i]+=idf*f*(k1+1)/(f+k1*(1-b+b*lens[i]/avg))
            top=sorted(sc.items(),key=lambda x:-x[1])[:50]
            seen=[]
            for i,s in top:
                d=rows[i][1].rsplit('.',1)[0]
                if d not in seen: seen.append(d)
            top=seen[:10]
            dcg=sum((2**rel.get(d,0)-1)/math.log2(r+2) for r,d in enumerate(top))
            idcg=sum((2**v-1)/math.log2(r+2) for r,v in enumerate(sorted(rel.values(),reverse=True)[:10]))
            ndcg+=dcg/idcg; n+=1
        out.append(ndcg/n)
    return out
print(len(rows),'chunks; nDCG@10 test / train')
for drop_stop in [False, True]:
    for alg in ['porter','english']:
        for qn,q in [('exact',lambda x:x),('quant',quant)]:
            test,train=run(alg,drop_stop,q)
            print('stop-words', 'dropped' if drop_stop else 'indexed', alg, qn,
                  round(test,4), round(train,4), flush=True)
