namespace RetriKT.MLNet.Knowledge;

/// <summary>
/// Binary heap of (score, id) used by the HNSW search: best-on-top for the candidate frontier, worst-on-top for the
/// bounded result set. Growable arrays, reused across queries through per-thread scratch.
/// </summary>
internal sealed class ScoredHeap(bool bestOnTop, int capacity = 64)
{
    private float[] _scores = new float[capacity];
    private int[] _ids = new int[capacity];

    public int Count { get; private set; }
    public float TopScore => _scores[0];
    public int TopId => _ids[0];

    public void Clear() => Count = 0;

    public void Push(float score, int id)
    {
        if (Count == _scores.Length)
        {
            Array.Resize(ref _scores, Count * 2);
            Array.Resize(ref _ids, Count * 2);
        }
        int c = Count++;
        while (c > 0)
        {
            int p = (c - 1) >> 1;
            if (!Above(score, id, _scores[p], _ids[p])) break;
            _scores[c] = _scores[p];
            _ids[c] = _ids[p];
            c = p;
        }
        _scores[c] = score;
        _ids[c] = id;
    }

    public void Pop()
    {
        int n = --Count;
        if (n == 0) return;
        float score = _scores[n];
        int id = _ids[n], p = 0;
        while (true)
        {
            int l = 2 * p + 1;
            if (l >= n) break;
            int c = l + 1 < n && Above(_scores[l + 1], _ids[l + 1], _scores[l], _ids[l]) ? l + 1 : l;
            if (!Above(_scores[c], _ids[c], score, id)) break;
            _scores[p] = _scores[c];
            _ids[p] = _ids[c];
            p = c;
        }
        _scores[p] = score;
        _ids[p] = id;
    }

    /// <summary>Item <paramref name="i"/> in heap order (not sorted).</summary>
    public (float Score, int Id) this[int i] => (_scores[i], _ids[i]);

    // "Better" = higher score, then lower id (the order every index reports results in).
    private bool Above(float s, int id, float otherS, int otherId)
        => bestOnTop ? TopK.Better(s, id, otherS, otherId) : TopK.Better(otherS, otherId, s, id);
}
