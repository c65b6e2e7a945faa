using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Knowledge;

/// <summary>
/// Term-match retrieval over the student's token ids: every store entry is a TF-IDF vector (tf = count in the entry,
/// idf = ln((1 + N) / (1 + df)), L2-normalised) held in an inverted index; a query's score against an entry is the cosine
/// of their TF-IDF vectors. It has no trained parameters: it is built from the store's token ids and saved with the
/// model, so serving does not need the store's texts.
/// </summary>
/// <remarks>
/// Why it exists next to the dense index: the student's head and its dense retrieval read the same 48-dimensional
/// embedding, so p_knn mostly repeats what the head already says (λ was tuned to 0 on most runs). Matching words
/// against thousands of teacher-labelled samples is evidence of another kind — on SST-2 (seed 13, 8,192 generated
/// samples, 1,400-word vocabulary) a term-match vote over the top 128 alone labels the dev set about as well as the
/// trained head (≈ 70 %) — and the two err on different rows.
/// </remarks>
public sealed class LexicalIndex
{
    [ThreadStatic] private static float[]? t_accumulator;
    [ThreadStatic] private static int[]? t_touched;
    [ThreadStatic] private static int[]? t_querySlot; // per term: 1 + its slot among the query's distinct terms; 0 when not in the query

    private readonly float[] _idf;          // per term; 0 for terms that never occur (and for excluded ids)
    private readonly int[] _postingStart;   // CSR over terms: postings of term t are [_postingStart[t], _postingStart[t + 1])
    private readonly int[] _postingEntry;
    private readonly float[] _postingWeight;

    private LexicalIndex(int count, float[] idf, int[] postingStart, int[] postingEntry, float[] postingWeight)
    {
        Count = count;
        _idf = idf;
        _postingStart = postingStart;
        _postingEntry = postingEntry;
        _postingWeight = postingWeight;
    }

    /// <summary>
    /// A store needs at least this many entries per neighbour term matching votes with (k): in a store not much larger
    /// than k the "top k" is most of the store, a global average rather than neighbours (on SST-2's 32 few-shot rows it
    /// only added noise). Training and <c>WithAddedKnowledge</c> both apply it.
    /// </summary>
    public const int MinimumEntriesPerNeighbor = 4;
    /// <summary>k of term matching by default: the student trainer's default, and <c>WithAddedKnowledge</c>'s for a model without a term index.</summary>
    public const int DefaultNeighborCount = 128;

    /// <summary>Whether a store of <paramref name="storeCount"/> entries is large enough for term matching over <paramref name="neighborCount"/> neighbours (k ≥ 1).</summary>
    public static bool IsLargeEnough(int storeCount, int neighborCount)
        => neighborCount > 0 && storeCount >= (long)MinimumEntriesPerNeighbor * neighborCount;

    /// <summary>Indexed entries.</summary>
    public int Count { get; }
    /// <summary>Size of the term space (the vocabulary size the ids come from).</summary>
    public int TermCount => _idf.Length;
    /// <summary>Stored (entry, term) pairs.</summary>
    public int PostingCount => _postingEntry.Length;

    /// <summary>
    /// Indexes <paramref name="entries"/>, token ids from <paramref name="vocabulary"/>; its special tokens (padding,
    /// unknown, [CLS], [SEP], [MASK]) are not terms. The student's trainer and <c>WithAddedKnowledge</c> both build here,
    /// so an index grown after training weighs terms as one built by training would.
    /// </summary>
    public static LexicalIndex Build(IReadOnlyList<int[]> entries, WordPieceVocabulary vocabulary)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        return Build(entries, vocabulary.Count, t => t != vocabulary.PadId && t != vocabulary.UnknownId &&
            t != vocabulary.ClsId && t != vocabulary.SepId && t != vocabulary.MaskId);
    }

    /// <summary>
    /// Indexes <paramref name="entries"/> (token ids per entry, ids in [0, <paramref name="termCount"/>)); ids for
    /// which <paramref name="isTerm"/> is false (special tokens) are ignored.
    /// </summary>
    public static LexicalIndex Build(IReadOnlyList<int[]> entries, int termCount, Func<int, bool> isTerm)
    {
        ArgumentNullException.ThrowIfNull(entries);
        ArgumentNullException.ThrowIfNull(isTerm);
        if (termCount <= 0) throw new ArgumentOutOfRangeException(nameof(termCount), $"Term count must be positive, found {termCount}.");
        var use = new bool[termCount];
        for (int t = 0; t < termCount; t++) use[t] = isTerm(t);
        var df = new int[termCount];
        var counts = new List<(int Term, int Count)[]>(entries.Count);
        for (int e = 0; e < entries.Count; e++)
        {
            var terms = new SortedDictionary<int, int>();
            foreach (int id in entries[e])
            {
                if ((uint)id >= (uint)termCount) throw new ArgumentException($"Entry {e}: token id {id} is outside [0, {termCount}).", nameof(entries));
                if (use[id]) terms[id] = terms.GetValueOrDefault(id) + 1;
            }
            foreach (int t in terms.Keys) df[t]++;
            counts.Add(terms.Select(p => (p.Key, p.Value)).ToArray());
        }
        var idf = new float[termCount];
        for (int t = 0; t < termCount; t++) idf[t] = df[t] == 0 ? 0 : (float)Math.Log((1.0 + entries.Count) / (1.0 + df[t]));

        var start = new int[termCount + 1];
        for (int t = 0; t < termCount; t++) start[t + 1] = start[t] + df[t];
        var entry = new int[start[termCount]];
        var weight = new float[start[termCount]];
        var fill = (int[])start.Clone();
        for (int e = 0; e < counts.Count; e++)
        {
            double norm = 0;
            foreach (var (t, c) in counts[e]) norm += (double)(c * idf[t]) * (c * idf[t]);
            float scale = norm > 0 ? (float)(1 / Math.Sqrt(norm)) : 0;
            foreach (var (t, c) in counts[e])
            {
                int at = fill[t]++;
                entry[at] = e; // entries are visited in order, so each posting list is sorted by entry
                weight[at] = c * idf[t] * scale;
            }
        }
        return new LexicalIndex(entries.Count, idf, start, entry, weight);
    }

    /// <summary>
    /// The top <paramref name="k"/> entries by TF-IDF cosine with <paramref name="queryIds"/>, best first (ties: lower
    /// entry first). Only entries sharing at least one term are returned; returns how many were found (≤ k).
    /// </summary>
    public int Search(ReadOnlySpan<int> queryIds, int k, Span<int> ids, Span<float> scores)
    {
        if (k < 1) throw new ArgumentOutOfRangeException(nameof(k), $"k must be >= 1, found {k}.");
        if (ids.Length < k || scores.Length < k) throw new ArgumentException($"Result spans hold {Math.Min(ids.Length, scores.Length)} slots, k = {k}.");
        // The query's TF-IDF vector: its distinct terms in the order they first occur (the order the scores are summed
        // in), with counts. A slot per term, not a scan of the terms so far: that was quadratic in a long query's length.
        Span<int> terms = queryIds.Length <= 512 ? stackalloc int[queryIds.Length] : new int[queryIds.Length];
        Span<float> weights = queryIds.Length <= 512 ? stackalloc float[queryIds.Length] : new float[queryIds.Length];
        var slot = t_querySlot is { } o && o.Length >= _idf.Length ? o : t_querySlot = new int[_idf.Length];
        int distinct = 0;
        foreach (int id in queryIds)
        {
            if ((uint)id >= (uint)_idf.Length || _idf[id] == 0) continue;
            int at = slot[id] - 1;
            if (at < 0) { slot[id] = distinct + 1; terms[distinct] = id; weights[distinct++] = _idf[id]; }
            else weights[at] += _idf[id];
        }
        foreach (int t in terms[..distinct]) slot[t] = 0; // leave the scratch clean for the next query
        if (distinct == 0) return 0;
        float norm = System.Numerics.Tensors.TensorPrimitives.Norm(weights[..distinct]);
        var accumulator = t_accumulator is { } a && a.Length >= Count ? a : t_accumulator = new float[Count];
        var touched = t_touched is { } u && u.Length >= Count ? u : t_touched = new int[Count];
        int touchedCount = 0;
        for (int q = 0; q < distinct; q++)
        {
            int t = terms[q];
            float w = weights[q] / norm;
            for (int p = _postingStart[t]; p < _postingStart[t + 1]; p++)
            {
                int e = _postingEntry[p];
                if (accumulator[e] == 0) touched[touchedCount++] = e;
                accumulator[e] += w * _postingWeight[p];
            }
        }
        var top = new TopK(scores, ids, Math.Min(k, Math.Max(1, touchedCount)));
        for (int i = 0; i < touchedCount; i++)
        {
            int e = touched[i];
            top.Offer(accumulator[e], e);
            accumulator[e] = 0; // leave the scratch clean for the next query
        }
        return touchedCount == 0 ? 0 : top.SortDescending();
    }

    /// <summary>Writes the index (little-endian): counts, idf per term, CSR offsets, entries, weights.</summary>
    public void Write(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(Count);
        writer.Write(TermCount);
        writer.Write(PostingCount);
        foreach (float v in _idf) writer.Write(v);
        foreach (int v in _postingStart) writer.Write(v);
        foreach (int v in _postingEntry) writer.Write(v);
        foreach (float v in _postingWeight) writer.Write(v);
    }

    /// <summary>
    /// Reads an index written by <see cref="Write"/> and checks it against the store it serves: <paramref name="source"/>
    /// names the file in messages; the entry count and term count must match.
    /// </summary>
    public static LexicalIndex Read(BinaryReader reader, int expectedCount, int expectedTermCount, string source)
    {
        ArgumentNullException.ThrowIfNull(reader);
        int count = reader.ReadInt32(), termCount = reader.ReadInt32(), postings = reader.ReadInt32();
        if (count != expectedCount) throw new InvalidDataException($"{source}: the term index covers {count} entries, the store holds {expectedCount}.");
        if (termCount != expectedTermCount) throw new InvalidDataException($"{source}: the term index covers {termCount} terms, the vocabulary holds {expectedTermCount}.");
        if (postings < 0 || (long)postings > (long)count * 4096) throw new InvalidDataException($"{source}: {postings} postings for {count} entries is not a valid term index.");
        var idf = new float[termCount];
        for (int i = 0; i < termCount; i++)
        {
            idf[i] = reader.ReadSingle();
            if (!(idf[i] >= 0) || !float.IsFinite(idf[i])) throw new InvalidDataException($"{source}: term {i} has idf {idf[i]}, expected a finite value ≥ 0.");
        }
        var start = new int[termCount + 1];
        for (int i = 0; i <= termCount; i++)
        {
            start[i] = reader.ReadInt32();
            if (i == 0 ? start[i] != 0 : start[i] < start[i - 1] || start[i] > postings)
                throw new InvalidDataException($"{source}: posting offset {i} is {start[i]}, expected non-decreasing offsets from 0 to {postings}.");
        }
        if (start[termCount] != postings) throw new InvalidDataException($"{source}: posting offsets end at {start[termCount]}, expected {postings}.");
        var entry = new int[postings];
        for (int i = 0; i < postings; i++)
        {
            entry[i] = reader.ReadInt32();
            if ((uint)entry[i] >= (uint)count) throw new InvalidDataException($"{source}: posting {i} names entry {entry[i]}, expected [0, {count}).");
        }
        var weight = new float[postings];
        for (int i = 0; i < postings; i++)
        {
            weight[i] = reader.ReadSingle();
            if (!(weight[i] >= 0 && weight[i] <= 1.0001f)) throw new InvalidDataException($"{source}: posting {i} has weight {weight[i]}, expected [0, 1].");
        }
        return new LexicalIndex(count, idf, start, entry, weight);
    }
}
