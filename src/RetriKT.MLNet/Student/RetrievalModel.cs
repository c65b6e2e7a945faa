using System.Numerics.Tensors;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Student;

/// <summary>
/// How a prediction mixes its sources: p = (1 − Dense − Lexical)·p_head + Dense·p_knn + Lexical·p_terms. Dense is λ
/// (retrieval by the student's embedding), Lexical is μ (retrieval by TF-IDF term match); each in [0, 1], sum ≤ 1.
/// </summary>
internal readonly record struct RetrievalWeights(double Dense, double Lexical = 0)
{
    public static RetrievalWeights Checked(double dense, double lexical)
    {
        if (dense is < 0 or > 1 || double.IsNaN(dense))
            throw new ArgumentOutOfRangeException(nameof(dense), $"The retrieval weight λ must be in [0, 1], found {dense}.");
        if (lexical is < 0 or > 1 || double.IsNaN(lexical))
            throw new ArgumentOutOfRangeException(nameof(lexical), $"The term-match weight μ must be in [0, 1], found {lexical}.");
        if (dense + lexical > 1 + 1e-9)
            throw new ArgumentOutOfRangeException(nameof(lexical), $"λ + μ must be at most 1, found {dense} + {lexical}.");
        return new RetrievalWeights(dense, lexical);
    }
}

/// <summary>Scores of a block of rows: label distribution per row and the reported neighbours.</summary>
internal sealed class ScoredBlock(int rows, int labels, int neighbors)
{
    public int Rows { get; } = rows;
    public float[] Scores { get; } = new float[rows * labels];
    public int[] NeighborIndices { get; } = new int[rows * neighbors];
    public float[] NeighborSimilarities { get; } = new float[rows * neighbors];
    public int NeighborsPerRow { get; } = neighbors;
}

/// <summary>
/// The trained student at inference, in managed code: encoder + head (<see cref="ManagedStudentEncoder"/>), the
/// knowledge store, its search index (<see cref="IVectorIndex"/> from <see cref="VectorIndexes"/>: exact, or HNSW for
/// large stores, both over the store's own embedding memory: the embeddings are held once), λ and τ, and optionally a term-match index (<see cref="LexicalIndex"/>) with its k and τ.
/// p = (1 − λ − μ)·p_head + λ·p_knn + μ·p_terms, p_knn = Σ softmax(sim/τ)·softlabel over the top-k neighbours of the
/// embedding, p_terms the same over the top-k entries by TF-IDF cosine (p_head when no entry shares a word).
/// Immutable and thread-safe (per-thread scratch only). Holds no native memory.
/// </summary>
internal sealed class RetrievalModel
{
    public RetrievalModel(StudentConfig config, StudentWeights weights, TextTokenizingTransformer tokenizer, KnowledgeStore store,
        double temperature, int neighborCount, LexicalIndex? lexical = null, int lexicalNeighborCount = 0, double lexicalTemperature = 1,
        RetrieverIndexKind indexKind = RetrieverIndexKind.Auto, StudentBackbone? backbone = null, string? encoderFingerprint = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(store);
        if (!store.HasEmbeddings) throw new ArgumentException("The knowledge store has no embeddings.", nameof(store));
        if (store.Dimension != config.HiddenSize)
            throw new ArgumentException($"Store embeddings have dimension {store.Dimension}, the student's hidden size is {config.HiddenSize}.", nameof(store));
        if (store.LabelCount != config.LabelCount)
            throw new ArgumentException($"The store has {store.LabelCount} labels, the student head has {config.LabelCount}.", nameof(store));
        if (!(temperature > 0) || !double.IsFinite(temperature)) throw new ArgumentOutOfRangeException(nameof(temperature), $"Temperature must be positive, found {temperature}.");
        if (lexical is not null)
        {
            if (lexical.Count != store.Count)
                throw new ArgumentException($"The term index covers {lexical.Count} entries, the store holds {store.Count}.", nameof(lexical));
            if (!(lexicalTemperature > 0) || !double.IsFinite(lexicalTemperature))
                throw new ArgumentOutOfRangeException(nameof(lexicalTemperature), $"Term-match temperature must be positive, found {lexicalTemperature}.");
            if (lexicalNeighborCount < 1) throw new ArgumentOutOfRangeException(nameof(lexicalNeighborCount), $"Term-match k must be >= 1, found {lexicalNeighborCount}.");
        }
        Config = config;
        Weights = weights;
        Tokenizer = tokenizer;
        EncoderFingerprint = encoderFingerprint ?? FingerprintOf(config, weights, tokenizer, backbone);
        // The store's embeddings are this student's by construction (training and WithAddedKnowledge embed them with it,
        // and a model.zip holds the two as checksummed parts of one model), so the store carries the fingerprint
        // computed here, whatever it carried: a model saved before fingerprints has none, and a model saved by a
        // version that hashed differently must still load.
        if (!string.Equals(store.EncoderFingerprint, EncoderFingerprint, StringComparison.Ordinal)) store = store.WithEncoderFingerprint(EncoderFingerprint);
        Store = store;
        Temperature = temperature;
        NeighborCount = Math.Max(1, Math.Min(neighborCount, store.Count));
        // The automatic choice is not saved: a loaded model chooses again (the same way, the graph is deterministic).
        Index = VectorIndexes.For(store, indexKind);
        IndexKind = indexKind;
        Lexical = lexical;
        LexicalNeighborCount = lexical is null ? 0 : Math.Min(lexicalNeighborCount, store.Count);
        LexicalTemperature = lexicalTemperature;
        if (backbone is not null)
        {
            if (config.HiddenSize != backbone.Dimension || config.Layers != 0)
                throw new ArgumentException($"A student with a backbone has hidden size {backbone.Dimension} and no layers of its own, found hidden {config.HiddenSize}, {config.Layers} layers.", nameof(config));
            if (config.VocabularySize != backbone.Config.VocabSize || tokenizer.Vocabulary.Count != backbone.Config.VocabSize)
                throw new ArgumentException($"The backbone's vocabulary holds {backbone.Config.VocabSize} tokens, the student's {tokenizer.Vocabulary.Count}.", nameof(tokenizer));
            if (config.MaxLength > backbone.Config.MaxPositions)
                throw new ArgumentException($"MaxLength {config.MaxLength} exceeds the backbone's {backbone.Config.MaxPositions} positions.", nameof(config));
        }
        Backbone = backbone;
        Encoder = backbone is null ? new ManagedStudentEncoder(config, weights) : new BackboneStudentNetwork(backbone, weights, config.LabelCount);
    }

    public StudentConfig Config { get; }
    public StudentWeights Weights { get; }
    /// <summary>The student encoder's <see cref="IStoreEncoder.Fingerprint"/> (<see cref="FingerprintOf"/>).</summary>
    public string EncoderFingerprint { get; }
    public TextTokenizingTransformer Tokenizer { get; }
    public KnowledgeStore Store { get; }
    public IVectorIndex Index { get; }
    /// <summary>The tiny encoder and head (<see cref="ManagedStudentEncoder"/>) or a pretrained backbone with a trained projection and head.</summary>
    public IStudentNetwork Encoder { get; }
    /// <summary>The frozen pretrained encoder the student is built on, or null for the tiny from-scratch student.</summary>
    public StudentBackbone? Backbone { get; }
    /// <summary>Every parameter the student predicts with: the tiny network's, or the backbone's plus the projection, head and τ.</summary>
    public long ParameterCount => Backbone is { } b
        ? b.ParameterCount + BackboneStudentNetwork.TrainedParameterCount(b.Dimension, Config.LabelCount)
        : Config.ParameterCount;
    /// <summary>Parameters in the token/position/segment embeddings (the backbone's, when there is one).</summary>
    public long EmbeddingParameterCount => Backbone is { } b
        ? (long)(b.Config.VocabSize + b.Config.MaxPositions + b.Config.TypeVocabSize) * b.Dimension
        : Config.EmbeddingParameterCount;
    public double Temperature { get; }
    public int NeighborCount { get; }
    /// <summary>The kind <see cref="Index"/> was asked for (Auto unless forced), so a model made from this one (a grown store) searches alike.</summary>
    public RetrieverIndexKind IndexKind { get; }
    /// <summary>The term-match index over the store, or null (models trained without it).</summary>
    public LexicalIndex? Lexical { get; }
    public int LexicalNeighborCount { get; }
    public double LexicalTemperature { get; }
    public int LabelCount => Store.LabelCount;

    /// <summary>The same model searching with an index of <paramref name="kind"/> (the weights, store and term index are shared).</summary>
    public RetrievalModel WithIndex(RetrieverIndexKind kind)
        => new(Config, Weights, Tokenizer, Store, Temperature, NeighborCount, Lexical, LexicalNeighborCount, LexicalTemperature, kind, Backbone, EncoderFingerprint);

    /// <summary>
    /// Content hash of what the student's embedding depends on: its shape, tokenizer (vocabulary, lowercasing, length),
    /// weights and backbone. The learned temperature is left out: a trained student holds it among its weights, a
    /// loaded one does not (its τ is a number of the model), and it does not change an embedding. Stable across save
    /// and load, which store every value bit for bit.
    /// </summary>
    public static string FingerprintOf(StudentConfig config, StudentWeights weights, TextTokenizingTransformer tokenizer, StudentBackbone? backbone)
    {
        using var fingerprint = new ContentFingerprint("retrikt-student/1");
        foreach (long value in new long[] { config.VocabularySize, config.HiddenSize, config.Layers, config.Heads, config.FeedForwardSize,
                     config.MaxLength, (long)config.Pooling, config.LabelCount, config.EmbeddingRank, tokenizer.MaxLength })
            fingerprint.Add(value);
        fingerprint.Add(tokenizer.Vocabulary);
        foreach (var tensor in weights.Tensors)
        {
            if (tensor.Name == StudentWeights.TemperatureName) continue;
            fingerprint.Add(tensor.Name).Add((long)tensor.Shape.Length);
            foreach (var d in tensor.Shape) fingerprint.Add(d);
            fingerprint.Add(tensor.Values);
        }
        fingerprint.Add(backbone is not null);
        backbone?.Weights.AddTo(fingerprint, backbone.Pooling);
        // Hashed only when not all 0, so a model saved before the pair token types keeps its fingerprint.
        if (backbone is { Segments: not PairSegments.AllZero }) fingerprint.Add("pair-segments").Add((long)backbone.Segments);
        return fingerprint.Finish();
    }
    public int Dimension => Store.Dimension;

    public int[] Tokenize(string text, string? text2, out bool truncated) => Tokenizer.Encode(text, text2, out truncated);

    /// <summary>L2-normalised embeddings of a batch, row-major [B, D], written to <paramref name="destination"/>.</summary>
    public void Embed(IReadOnlyList<int[]> ids, Span<float> destination)
    {
        int d = Dimension;
        for (int i = 0; i < ids.Count; i++)
        {
            var row = destination.Slice(i * d, d);
            Encoder.Encode(ids[i], Tokenizer.Vocabulary.SepId, row);
            Normalize(row);
        }
    }

    /// <summary>
    /// Scores a block of rows (each row through <see cref="ScoreOne"/>; rows run in parallel, each row's result does
    /// not depend on the others), with the top-<paramref name="reportNeighbors"/> neighbours of each row.
    /// </summary>
    public ScoredBlock Score(IReadOnlyList<int[]> ids, RetrievalWeights weights, int reportNeighbors)
    {
        int b = ids.Count, labels = LabelCount;
        var block = new ScoredBlock(b, labels, reportNeighbors);
        if (b == 0) return block;
        Parallel.For(0, b, new ParallelOptions { MaxDegreeOfParallelism = Math.Min(b, Environment.ProcessorCount) }, i =>
            ScoreOne(ids[i], weights, block.Scores.AsSpan(i * labels, labels),
                block.NeighborIndices.AsSpan(i * reportNeighbors, reportNeighbors), block.NeighborSimilarities.AsSpan(i * reportNeighbors, reportNeighbors)));
        return block;
    }

    /// <summary>
    /// One row: encoder, head, softmax; then (when μ &gt; 0) p_terms from <see cref="Lexical"/>; then (when λ &gt; 0)
    /// the normalised embedding's top-k neighbours from <see cref="Index"/> and p_knn. The neighbours reported explain
    /// the prediction through the retrieval part that weighs more: term match's (TF-IDF cosine) when μ &gt; λ, else the
    /// embedding's (cosine). Absent neighbours (store smaller than asked, or no entry sharing a term) are reported as
    /// index −1, similarity NaN.
    /// </summary>
    public void ScoreOne(int[] ids, RetrievalWeights mix, Span<float> scores, Span<int> neighborIndices, Span<float> neighborSimilarities)
    {
        int labels = LabelCount, d = Dimension;
        Span<float> pooled = d <= 1024 ? stackalloc float[d] : new float[d];
        Span<float> part = labels <= 256 ? stackalloc float[labels] : new float[labels];
        EncodeAndClassify(ids, pooled, scores);
        bool reportTerms = neighborIndices.Length > 0 && ExplainsByTerms(mix);
        // μ > 0 implies λ < 1 here, so the term match takes its share (no entry sharing a term: scores stay p_head).
        if (mix.Lexical > 0 && Lexical is not null
            && TermMatchVote(ids, part, reportTerms ? neighborIndices : default, reportTerms ? neighborSimilarities : default) > 0)
            RetrievalMix.MixTermMatch(scores, part, mix.Dense, mix.Lexical);
        int report = reportTerms ? 0 : neighborIndices.Length;
        if (mix.Dense <= 0 && report == 0) return;
        Normalize(pooled);
        NeighborVote(pooled, mix.Dense > 0 ? part : default, neighborIndices[..report], neighborSimilarities[..report]);
        // scores already hold (1 − μ')·p_head + μ'·p_terms (or p_head): take λ of the total from p_knn.
        if (mix.Dense > 0) RetrievalMix.MixNeighbors(scores, part, mix.Dense);
    }

    /// <summary>
    /// Whether a prediction with <paramref name="mix"/> is explained by term match's neighbours (it weighs more than the
    /// embedding's, μ &gt; λ, and there is a term index) rather than the embedding's.
    /// </summary>
    public bool ExplainsByTerms(RetrievalWeights mix) => Lexical is not null && mix.Lexical > mix.Dense;

    /// <summary>
    /// One row's parts alone, for an explanation: p_head, p_knn (with the embedding's top neighbours) and, with a term
    /// index, p_terms (with the term match's top neighbours). Returns how many entries p_terms voted over; 0 when no entry
    /// shares a term (or there is no term index), and then <paramref name="terms"/> holds p_head, as the student uses
    /// it. Mixed by <see cref="RetrievalMix.Combine"/>, the parts give <see cref="ScoreOne"/>'s scores bit for bit.
    /// </summary>
    public int ScoreParts(int[] ids, Span<float> head, Span<float> knn, Span<float> terms,
        Span<int> knnIndices, Span<float> knnSimilarities, Span<int> termIndices, Span<float> termSimilarities)
    {
        int d = Dimension;
        Span<float> pooled = d <= 1024 ? stackalloc float[d] : new float[d];
        EncodeAndClassify(ids, pooled, head);
        int used = Lexical is null ? 0 : TermMatchVote(ids, terms, termIndices, termSimilarities);
        if (used == 0)
        {
            head.CopyTo(terms);
            termIndices.Fill(-1);
            termSimilarities.Fill(float.NaN);
        }
        Normalize(pooled);
        NeighborVote(pooled, knn, knnIndices, knnSimilarities);
        return used;
    }

    /// <summary>One row's pooled embedding (not normalised) and the head's probabilities, p_head.</summary>
    public void EncodeAndClassify(int[] ids, Span<float> pooled, Span<float> probabilities)
    {
        int labels = LabelCount;
        Span<float> logits = labels <= 256 ? stackalloc float[labels] : new float[labels];
        Encoder.Encode(ids, Tokenizer.Vocabulary.SepId, pooled);
        Encoder.Head(pooled, logits);
        SafeSoftMax.Compute(logits, probabilities);
    }

    /// <summary>
    /// p_terms of one row into <paramref name="terms"/>: the soft vote of its top-k entries by TF-IDF cosine. Returns how
    /// many entries voted; 0 when none shares a term (<paramref name="terms"/> is then untouched). The top
    /// <paramref name="reportIndices"/>.Length entries of the same search are reported there (−1, NaN where fewer match).
    /// </summary>
    private int TermMatchVote(int[] ids, Span<float> terms, Span<int> reportIndices, Span<float> reportSimilarities)
    {
        int report = reportIndices.Length;
        int k = Math.Min(Math.Max(LexicalNeighborCount, report), Lexical!.Count);
        if (k == 0) return 0;
        Span<int> idx = k <= 256 ? stackalloc int[k] : new int[k];
        Span<float> sims = k <= 256 ? stackalloc float[k] : new float[k];
        int found = Lexical.Search(ids, k, idx, sims);
        for (int j = 0; j < report; j++)
        {
            reportIndices[j] = j < found ? idx[j] : -1;
            reportSimilarities[j] = j < found ? sims[j] : float.NaN;
        }
        int used = Math.Min(LexicalNeighborCount, found);
        if (used > 0) Store.SoftVote(idx[..used], sims[..used], LexicalTemperature, terms);
        return used;
    }

    /// <summary>
    /// p_knn of a normalised embedding into <paramref name="knn"/> (skipped when it is empty): the soft vote of its top-k
    /// neighbours in <see cref="Index"/>. The top <paramref name="reportIndices"/>.Length neighbours of the same search are
    /// reported there (−1, NaN past the store's size).
    /// </summary>
    private void NeighborVote(ReadOnlySpan<float> normalized, Span<float> knn, Span<int> reportIndices, Span<float> reportSimilarities)
    {
        int report = reportIndices.Length;
        // Always k neighbours or more, vote or not: an approximate index's top results depend on the k asked for, and the
        // neighbours a model reports must not change with its weights.
        int k = Math.Min(Math.Max(NeighborCount, report), Index.Count);
        Span<int> idx = k <= 256 ? stackalloc int[k] : new int[k];
        Span<float> sims = k <= 256 ? stackalloc float[k] : new float[k];
        Index.Search(normalized, k, idx, sims);
        if (!knn.IsEmpty)
        {
            int used = Math.Min(NeighborCount, k);
            // Nor may the scores change with the neighbours reported: an approximate index asked for more than k can
            // return another top k (HNSW answers a beam that reached fewer entries than asked by an exact scan), so a
            // vote over a larger search's first k searches again with k alone (an exact index's first k are its top k).
            if (k > used && Index is not ExactIndex)
            {
                Span<int> voteIdx = used <= 256 ? stackalloc int[used] : new int[used];
                Span<float> voteSims = used <= 256 ? stackalloc float[used] : new float[used];
                Index.Search(normalized, used, voteIdx, voteSims);
                Store.SoftVote(voteIdx, voteSims, Temperature, knn);
            }
            else
                Store.SoftVote(idx[..used], sims[..used], Temperature, knn);
        }
        for (int j = 0; j < report; j++)
        {
            reportIndices[j] = j < k ? idx[j] : -1;
            reportSimilarities[j] = j < k ? sims[j] : float.NaN;
        }
    }

    /// <summary>Scales <paramref name="v"/> to unit length (a zero vector stays zero), as the training side's normalize(p=2, eps=1e-12).</summary>
    private static void Normalize(Span<float> v)
    {
        float norm = TensorPrimitives.Norm(v);
        TensorPrimitives.Divide(v, Math.Max(norm, 1e-12f), v);
    }
}
