using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Student;

/// <summary>
/// Column names and inference settings of a <see cref="RetrievalClassifierTransformer"/>; <paramref name="LabelValueType"/>
/// is the type of the training label's key values (bool or a number), which PredictedLabel's key values take, or null for text.
/// </summary>
internal sealed record TransformerColumns(string Text, string? Text2, string Score, string PredictedLabel, string? Neighbors,
    int NeighborsToReport, int InferenceBatchSize, PrimitiveDataViewType? LabelValueType = null);

/// <summary>One store entry retrieved for a prediction.</summary>
/// <param name="EntryIndex">Index of the entry in <see cref="RetrievalClassifierTransformer.Store"/>.</param>
/// <param name="Similarity">
/// Cosine similarity between the query and the entry embeddings; for a model that weighs term match above embedding
/// retrieval (μ &gt; λ), whose neighbours are then the term-match ones, the cosine of their TF-IDF vectors.
/// </param>
/// <param name="Label">The entry's hard label.</param>
/// <param name="Text">The entry's text, or null when the store was saved without texts.</param>
/// <param name="Text2">The entry's second text for a sentence-pair task (for a generated entry, the part the teacher wrote), else null.</param>
public sealed record RetrievedNeighbor(int EntryIndex, float Similarity, string Label, string? Text, string? Text2 = null);

/// <summary>A prediction with its explanation.</summary>
/// <param name="Label">Predicted label name.</param>
/// <param name="LabelIndex">Predicted label index (key value − 1).</param>
/// <param name="Scores">Probability per label ((1 − λ − μ)·p_head + λ·p_knn + μ·p_terms).</param>
/// <param name="Neighbors">
/// The store entries nearest to the text, best first, by the retrieval part that weighs more in the prediction: by
/// embedding, or by term match when μ &gt; λ.
/// </param>
public sealed record RetrievalPrediction(string Label, int LabelIndex, float[] Scores, IReadOnlyList<RetrievedNeighbor> Neighbors);

/// <summary>One part of a prediction: what it says alone, and how much it weighs.</summary>
/// <param name="Weight">Its share of the prediction: 1 − λ − μ for the head, λ for embedding retrieval, μ for term match.</param>
/// <param name="Scores">Probability per label from this part alone.</param>
/// <param name="Neighbors">
/// The store entries it retrieved, best first: by embedding cosine for <see cref="RetrievalExplanation.Retrieval"/>, by
/// TF-IDF cosine for <see cref="RetrievalExplanation.TermMatch"/>; none for the head.
/// </param>
public sealed record PredictionPart(double Weight, float[] Scores, IReadOnlyList<RetrievedNeighbor> Neighbors);

/// <summary>
/// A prediction with every part behind it (<see cref="RetrievalClassifierTransformer.Explain"/>): the head, embedding
/// retrieval and, for a model with a term index, term match, each with what it alone says and its weight. A part of weight
/// 0 is still shown (what it would have said). The parts mixed by <see cref="RetrievalMix.Combine"/> with their weights give
/// <see cref="RetrievalPrediction.Scores"/> bit for bit.
/// </summary>
/// <param name="Prediction">The prediction, as <see cref="RetrievalClassifierTransformer.Predict"/> gives it.</param>
/// <param name="Head">The student's own head (p_head).</param>
/// <param name="Retrieval">The neighbours by the student's embedding and their soft vote (p_knn).</param>
/// <param name="TermMatch">
/// The entries by term match and their soft vote (p_terms); null for a model without a term index. When no entry shares a
/// word with the text, its scores are the head's (as the student uses them) and it lists no neighbours.
/// </param>
public sealed record RetrievalExplanation(RetrievalPrediction Prediction, PredictionPart Head, PredictionPart Retrieval, PredictionPart? TermMatch);

/// <summary>
/// The deployed RetriKT student: a tiny encoder plus its knowledge store. Outputs <c>PredictedLabel</c> (key with
/// KeyValues) and <c>Score</c> (probabilities with the annotations <c>MulticlassClassification.Evaluate</c> reads),
/// optionally the neighbours that explain a prediction. <see cref="ITransformer.Transform"/> scores rows in blocks of
/// <c>InferenceBatchSize</c> (rows of a block in parallel); a PredictionEngine scores one row. All inference is managed
/// code (<see cref="ManagedStudentEncoder"/>, the store's <see cref="IVectorIndex"/>): loading and predicting need no
/// TorchSharp. Immutable and thread-safe. Holds no native memory; <see cref="Dispose"/> only ends its use.
/// </summary>
public sealed class RetrievalClassifierTransformer : ITransformer, IStoreEncoder, IDisposable
{
    internal static readonly ModelFormat Format = new("RKTRCLSF", 0x00010005, 0x00010001, "RetriKTRetrievalClsf");

    private readonly IHostEnvironment _env;
    private readonly RetrievalModel _model;
    private readonly bool _saveStoreTexts;
    private int _disposed;

    // Format versions: 0x00010001 dense retrieval only; 0x00010002 adds the term-match index (Lexical.bin), μ, its k and τ;
    // 0x00010003 adds the optional pretrained backbone (its shape and pooling, its weights in Backbone.bin); 0x00010004 the
    // backbone's pair token types (PairSegments; before it, all 0); 0x00010005 the type of the label's key values (before it, text).
    private const uint LexicalVersion = 0x00010002;
    private const uint BackboneVersion = 0x00010003;
    private const uint PairSegmentsVersion = 0x00010004;
    private const uint LabelValueTypeVersion = 0x00010005;

    internal RetrievalClassifierTransformer(IHostEnvironment env, RetrievalModel model, double retrievalWeight, TransformerColumns columns,
        long? teacherParameterCount, bool saveStoreTexts, double lexicalRetrievalWeight = 0)
    {
        _env = env;
        _model = model;
        Weights = RetrievalWeights.Checked(retrievalWeight, lexicalRetrievalWeight);
        if (lexicalRetrievalWeight > 0 && model.Lexical is null)
            throw new ArgumentException($"The term-match weight μ is {lexicalRetrievalWeight}, but the model has no term-match index.", nameof(lexicalRetrievalWeight));
        Columns = columns;
        TeacherParameterCount = teacherParameterCount;
        _saveStoreTexts = saveStoreTexts;
    }

    internal TransformerColumns Columns { get; }

    /// <summary>The input column of the second text for a sentence-pair model (each row needs it), or null for one text.</summary>
    public string? SecondTextColumnName => Columns.Text2;

    /// <summary>What joins a stored sentence pair's two texts in the <c>Neighbors</c> column: <c>first ||| second</c>.</summary>
    public const string NeighborPairSeparator = " ||| ";
    internal RetrievalModel Model => _disposed == 0 ? _model : throw new ObjectDisposedException(nameof(RetrievalClassifierTransformer));

    /// <summary>Label names; label index i is key value i + 1 of <c>PredictedLabel</c>.</summary>
    public IReadOnlyList<string> LabelNames => _model.Store.LabelNames;
    internal RetrievalWeights Weights { get; }
    /// <summary>λ: weight of the retrieval distribution (neighbours by the student's embedding) in the prediction.</summary>
    public double RetrievalWeight => Weights.Dense;
    /// <summary>
    /// μ: weight of the term-match distribution (neighbours by TF-IDF cosine over the student's tokens) in the
    /// prediction; 0 when the model has no term-match index. p = (1 − λ − μ)·p_head + λ·p_knn + μ·p_terms.
    /// </summary>
    public double LexicalRetrievalWeight => Weights.Lexical;
    /// <summary>Entries p_terms averages over (0 without a term-match index).</summary>
    public int LexicalNeighborCount => _model.LexicalNeighborCount;
    /// <summary>Temperature of the softmax over term-match scores.</summary>
    public double LexicalTemperature => _model.LexicalTemperature;
    /// <summary>τ: temperature of the softmax over neighbour similarities.</summary>
    public double Temperature => _model.Temperature;
    /// <summary>Neighbours k that p_knn averages over.</summary>
    public int NeighborCount => _model.NeighborCount;
    /// <summary>The knowledge store (entries, soft labels, embeddings from this student's encoder).</summary>
    public KnowledgeStore Store => _model.Store;
    /// <summary>The WordPiece vocabulary of the student's tokenizer.</summary>
    public WordPieceVocabulary Vocabulary => _model.Tokenizer.Vocabulary;
    /// <summary>Maximum tokens per row (longer texts are truncated).</summary>
    public int MaxLength => _model.Tokenizer.MaxLength;
    /// <summary>Parameters of the student network (embeddings included; the store is data, not parameters).</summary>
    public long ParameterCount => _model.ParameterCount;
    /// <summary>Parameters in the token/position/segment embeddings.</summary>
    public long EmbeddingParameterCount => _model.EmbeddingParameterCount;
    /// <summary>
    /// The pretrained encoder the student is built on (package id and version, or the Hugging Face directory), or
    /// null for the tiny from-scratch student. Its weights are inside model.zip and counted in <see cref="ParameterCount"/>.
    /// </summary>
    public string? Backbone => _model.Backbone?.Description;
    /// <summary>The teacher's parameter count given at training, or null.</summary>
    public long? TeacherParameterCount { get; }
    /// <summary><see cref="ParameterCount"/> / <see cref="TeacherParameterCount"/>, or null.</summary>
    public double? TeacherParameterRatio => TeacherParameterCount is long t ? (double)ParameterCount / t : null;
    /// <summary>Hidden size, layers and heads of the encoder.</summary>
    public (int HiddenSize, int Layers, int Heads, int FeedForwardSize) Shape => _model.Backbone is { Config: var b }
        ? (b.HiddenSize, b.NumLayers, b.NumHeads, b.IntermediateSize)
        : (_model.Config.HiddenSize, _model.Config.Layers, _model.Config.Heads, _model.Config.FeedForwardSize);

    /// <summary>Embedding dimension (<see cref="IStoreEncoder"/>).</summary>
    public int Dimension => _model.Dimension;

    /// <summary>
    /// Content hash of the student encoder: its shape, tokenizer, weights and backbone, not the mix (λ, μ) or the store
    /// (<see cref="IStoreEncoder.Fingerprint"/>). Its own <see cref="Store"/> records the same one, as does a store this
    /// student embeds; another seed's student has another.
    /// </summary>
    public string Fingerprint => Model.EncoderFingerprint;

    /// <summary>
    /// A transformer sharing this one's weights and store but predicting with retrieval weight <paramref name="lambda"/>
    /// and term-match weight <paramref name="lexical"/> (λ + μ ≤ 1; (0, 0): the head alone; (1, 0): embedding retrieval
    /// alone; (0, 1): term-match retrieval alone). The two share the immutable weights and store; disposing one does not
    /// end the other.
    /// </summary>
    public RetrievalClassifierTransformer WithRetrievalWeight(double lambda, double lexical = 0) => With(Model, lambda, lexical);

    /// <summary>A transformer with this one's model and settings and <paramref name="columns"/>.</summary>
    internal RetrievalClassifierTransformer WithColumns(TransformerColumns columns)
        => new(_env, Model, RetrievalWeight, columns, TeacherParameterCount, _saveStoreTexts, LexicalRetrievalWeight);

    /// <summary>A transformer with this one's columns and settings over <paramref name="model"/>, predicting with λ and μ.</summary>
    internal RetrievalClassifierTransformer With(RetrievalModel model, double lambda, double lexical)
        => new(_env, model, lambda, Columns, TeacherParameterCount, _saveStoreTexts, lexical);

    /// <summary>The search structure over the store: <see cref="ExactIndex"/> or <see cref="HnswIndex"/>.</summary>
    public IVectorIndex Index => Model.Index;

    /// <summary>
    /// A transformer sharing this one's weights and store but searching the store with an index of
    /// <paramref name="kind"/>: by default (<see cref="RetrieverIndexKind.Auto"/>, also what a loaded model uses) exact
    /// search below <see cref="VectorIndexes.HnswMinimumFloats"/> (entries × dimension) and HNSW from there; Exact or Hnsw forces one
    /// (Hnsw builds the graph now). The choice is not saved with the model.
    /// </summary>
    public RetrievalClassifierTransformer WithIndex(RetrieverIndexKind kind)
        => With(Model.WithIndex(kind), RetrievalWeight, LexicalRetrievalWeight);

    /// <summary>
    /// A transformer with this one's weights, mix and settings whose store also holds <paramref name="added"/>: knowledge
    /// added after training, without training again (for example real text the teacher labelled since, through
    /// <c>UnlabeledText.Add</c>). The added entries are embedded by this student (embeddings they carry are ignored: they
    /// come from another encoder) and the term-match index is built again over all entries, as training builds it. The
    /// head is unchanged, so what the added entries teach reaches predictions only through retrieval, by λ and μ: a model
    /// whose mix was tuned to the head alone (λ = μ = 0) predicts exactly as before; choose the mix again on rows new to the model
    /// (the training assembly's <c>RetrievalClassifierTrainer.TuneMix</c>, or <see cref="WithRetrievalWeight"/>). A model
    /// trained without a term index because its store was too small for one gets one here when the grown store is large
    /// enough (<see cref="LexicalIndex.IsLargeEnough"/> with <paramref name="termMatchNeighbors"/>) and the model kept its
    /// store's texts, with μ still 0 until the mix is chosen again. The model's k for embedding retrieval, and for term
    /// matching when it has an index, are kept, and so is an index kind forced with <see cref="WithIndex"/>. Saving the
    /// result saves the larger store.
    /// </summary>
    /// <param name="added">Entries with the model's label names in the same order and with texts.</param>
    /// <param name="cancellation">Checked between blocks of the embedding.</param>
    /// <param name="termMatchNeighbors">
    /// k of the term index built for a model that has none (the trainer's default unless told); 0 keeps such a model
    /// without one. Ignored for a model that has an index.
    /// </param>
    public RetrievalClassifierTransformer WithAddedKnowledge(KnowledgeStore added, CancellationToken cancellation = default,
        int termMatchNeighbors = LexicalIndex.DefaultNeighborCount)
    {
        ArgumentNullException.ThrowIfNull(added);
        var model = Model;
        var store = model.Store;
        if (!added.LabelNames.SequenceEqual(store.LabelNames))
            throw new ArgumentException($"The added entries have labels [{string.Join(", ", added.LabelNames)}], the model's store [{string.Join(", ", store.LabelNames)}] (same names, same order).", nameof(added));
        if (added.Count == 0) throw new ArgumentException("The added store holds no entries.", nameof(added));
        // The texts a query must have (RequireTexts): an entry of only zero-width characters or spaces embeds as
        // [CLS] [SEP], and a pair model's entry without its second text as [CLS] a [SEP] [SEP], inputs the student never
        // saw, which retrieval then returned as neighbours of other such inputs.
        for (int i = 0; i < added.Count; i++)
        {
            var (text, text2) = (added.Entries[i].Text, added.Entries[i].Text2);
            if (TextInputs.MissingText(text) is { } missing)
                throw new ArgumentException($"Added entry {i} has no text (found {missing}); the student embeds the added entries from their texts.", nameof(added));
            if (Columns.Text2 is null && text2 is not null)
                throw new ArgumentException($"Added entry {i} has a second text, but this model reads one text (column '{Columns.Text}').", nameof(added));
            if (Columns.Text2 is not null && TextInputs.MissingText(text2) is { } missing2)
                throw new ArgumentException($"Added entry {i} has no second text (found {missing2}); this model reads sentence pairs (columns " +
                    $"'{Columns.Text}' and '{Columns.Text2}').", nameof(added));
        }
        ArgumentOutOfRangeException.ThrowIfNegative(termMatchNeighbors);
        // The term index covers every entry, so it needs the store's texts. A model with one must keep it (its μ may be
        // > 0) and fails without them; for a model without one the index is an addition, built only where it can be.
        int withoutText = -1;
        for (int i = 0; i < store.Count && withoutText < 0; i++)
            if (store.Entries[i].Text is null) withoutText = i;
        if (model.Lexical is not null && withoutText >= 0)
            throw new InvalidOperationException($"The model's store entry {withoutText} has no text (the model was saved without the store's texts), so its term-match index cannot be built again over the added entries.");
        int lexicalK = model.Lexical is not null ? model.LexicalNeighborCount
            : withoutText < 0 && LexicalIndex.IsLargeEnough(store.Count + added.Count, termMatchNeighbors) ? termMatchNeighbors : 0;
        var lexical = lexicalK > 0
            ? LexicalIndex.Build(store.Entries.Concat(added.Entries).Select(e => model.Tokenize(e.Text!, e.Text2, out _)).ToList(), model.Tokenizer.Vocabulary)
            : null;
        int d = model.Dimension;
        var embeddings = new float[(store.Count + added.Count) * d];
        store.Embeddings.Span.CopyTo(embeddings);
        added.WithEmbeddings(this, Columns.InferenceBatchSize, cancellation).Embeddings.Span.CopyTo(embeddings.AsSpan(store.Count * d));
        var grown = new KnowledgeStore(store.LabelNames, store.Entries.Concat(added.Entries)).WithEmbeddings(embeddings, d, model.EncoderFingerprint);
        var grownModel = new RetrievalModel(model.Config, model.Weights, model.Tokenizer, grown, model.Temperature, model.NeighborCount,
            lexical, lexicalK, model.LexicalTemperature, model.IndexKind, model.Backbone, model.EncoderFingerprint);
        return With(grownModel, RetrievalWeight, LexicalRetrievalWeight);
    }

    /// <summary>
    /// Predicts one text (pair), with the top neighbours of the retrieval part that weighs more (<see cref="Explain"/>
    /// shows every part).
    /// </summary>
    public RetrievalPrediction Predict(string text, string? text2 = null, int neighbors = 3)
    {
        ArgumentNullException.ThrowIfNull(text);
        RequireTexts(text, "text", text2, "text2");
        var model = Model;
        var ids = model.Tokenize(text, text2, out _);
        var scores = new float[model.LabelCount];
        var indices = new int[Math.Max(0, neighbors)];
        var sims = new float[indices.Length];
        model.ScoreOne(ids, Weights, scores, indices, sims);
        int best = RetrievalMix.ArgMax(scores);
        return new RetrievalPrediction(LabelNames[best], best, scores, ToNeighbors(model, indices, sims));
    }

    /// <summary>
    /// Predicts one text (pair) and shows every part behind the prediction (<see cref="RetrievalExplanation"/>): the
    /// head's own probabilities, embedding retrieval's top <paramref name="neighbors"/> entries and vote, and term match's
    /// when the model has a term index, each with its weight. <see cref="Predict"/> shows only the neighbours of the part
    /// that weighs more; this shows both, which matters for a model that mixes them.
    /// </summary>
    /// <example>
    /// <code language="csharp">
    /// var why = student.Explain("a gorgeous, witty film");
    /// Console.WriteLine($"{why.Prediction.Label}: head {why.Head.Scores[1]:F2} × {why.Head.Weight:F2}, "
    ///     + $"retrieval {why.Retrieval.Scores[1]:F2} × {why.Retrieval.Weight:F2}");
    /// foreach (var n in why.TermMatch?.Neighbors ?? []) Console.WriteLine($"  {n.Similarity:F2} ({n.Label}) {n.Text}");
    /// </code>
    /// </example>
    public RetrievalExplanation Explain(string text, string? text2 = null, int neighbors = 3)
    {
        ArgumentNullException.ThrowIfNull(text);
        RequireTexts(text, "text", text2, "text2");
        neighbors = Math.Max(0, neighbors);
        var model = Model;
        var ids = model.Tokenize(text, text2, out _);
        int labels = model.LabelCount;
        float[] head = new float[labels], knn = new float[labels], terms = new float[labels];
        int[] knnIndices = new int[neighbors], termIndices = new int[neighbors];
        float[] knnSimilarities = new float[neighbors], termSimilarities = new float[neighbors];
        model.ScoreParts(ids, head, knn, terms, knnIndices, knnSimilarities, termIndices, termSimilarities);
        var scores = new float[labels];
        RetrievalMix.Combine(head, knn, terms, RetrievalWeight, LexicalRetrievalWeight, scores);
        int best = RetrievalMix.ArgMax(scores);
        var byEmbedding = ToNeighbors(model, knnIndices, knnSimilarities);
        var byTerms = ToNeighbors(model, termIndices, termSimilarities);
        var prediction = new RetrievalPrediction(LabelNames[best], best, scores, model.ExplainsByTerms(Weights) ? byTerms : byEmbedding);
        return new RetrievalExplanation(prediction,
            new PredictionPart(1 - RetrievalWeight - LexicalRetrievalWeight, head, []),
            new PredictionPart(RetrievalWeight, knn, byEmbedding),
            model.Lexical is null ? null : new PredictionPart(LexicalRetrievalWeight, terms, byTerms));
    }

    /// <summary>
    /// A query needs a text with a word (<see cref="TextInputs.MissingText"/>), a sentence-pair model the second text, and a
    /// one-text model must not get one: the tokenizer would encode each as an input the student never saw (a text it reads
    /// as empty is [CLS] [SEP], which the trainer skips) and answer with confidence.
    /// </summary>
    private void RequireTexts(string text, string textName, string? text2, string name)
    {
        if (TextInputs.MissingText(text) is { } missing)
            throw new ArgumentException($"{textName}: this model reads column '{Columns.Text}', so it needs a text; found {missing}.", textName);
        RequireSecondText(text2, name);
    }

    private void RequireSecondText(string? text2, string name)
    {
        if (Columns.Text2 is null && text2 is not null)
            throw new ArgumentException($"{name}: this model reads one text (column '{Columns.Text}'), so it takes no second text; found \"{Shorten(text2)}\".", name);
        if (Columns.Text2 is not null && TextInputs.MissingText(text2) is { } found)
            throw new ArgumentException($"{name}: this model reads sentence pairs (columns '{Columns.Text}' and '{Columns.Text2}'), so it needs a second text; found {found}.", name);

        static string Shorten(string s) => s.Length <= 40 ? s : s[..39] + "…";
    }

    private List<RetrievedNeighbor> ToNeighbors(RetrievalModel model, int[] indices, float[] similarities)
    {
        var list = new List<RetrievedNeighbor>();
        for (int j = 0; j < indices.Length && indices[j] >= 0; j++)
        {
            var e = model.Store.Entries[indices[j]];
            list.Add(new RetrievedNeighbor(indices[j], similarities[j], LabelNames[e.Label], e.Text, e.Text2));
        }
        return list;
    }

    /// <summary>
    /// Bulk scoring without an IDataView, in blocks of <c>InferenceBatchSize</c> rows. Returns the probability
    /// vector per row. <paramref name="secondTexts"/> is for sentence-pair models (same length as <paramref name="texts"/>).
    /// </summary>
    public float[][] PredictBatch(IReadOnlyList<string> texts, IReadOnlyList<string?>? secondTexts = null)
    {
        ArgumentNullException.ThrowIfNull(texts);
        if (secondTexts is not null && secondTexts.Count != texts.Count)
            throw new ArgumentException($"secondTexts has {secondTexts.Count} rows, texts has {texts.Count}.", nameof(secondTexts));
        for (int i = 0; i < texts.Count; i++)
        {
            if (texts[i] is null) throw new ArgumentException($"texts[{i}] is null.", nameof(texts));
            RequireTexts(texts[i], $"texts[{i}]", secondTexts?[i], $"secondTexts[{i}]");
        }
        var model = Model;
        var result = new float[texts.Count][];
        int batch = Columns.InferenceBatchSize, k = model.LabelCount;
        for (int start = 0; start < texts.Count; start += batch)
        {
            int n = Math.Min(batch, texts.Count - start);
            var ids = Enumerable.Range(start, n).Select(i => model.Tokenize(texts[i], secondTexts?[i], out _)).ToList();
            var block = model.Score(ids, Weights, 0);
            for (int i = 0; i < n; i++) result[start + i] = block.Scores.AsSpan(i * k, k).ToArray();
        }
        return result;
    }

    /// <summary>Unit-length embeddings of texts from the student encoder (<see cref="IStoreEncoder"/>).</summary>
    public void Encode(IReadOnlyList<(string Text, string? Text2)> texts, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(texts);
        var model = Model;
        if (destination.Length < texts.Count * model.Dimension)
            throw new ArgumentException($"Destination holds {destination.Length} values, expected {texts.Count} × {model.Dimension}.", nameof(destination));
        for (int i = 0; i < texts.Count; i++) RequireSecondText(texts[i].Text2, $"texts[{i}].Text2");
        int batch = Columns.InferenceBatchSize;
        for (int start = 0; start < texts.Count; start += batch)
        {
            int n = Math.Min(batch, texts.Count - start);
            var ids = Enumerable.Range(start, n).Select(i => model.Tokenize(texts[i].Text ?? "", texts[i].Text2, out _)).ToList();
            model.Embed(ids, destination.Slice(start * model.Dimension, n * model.Dimension));
        }
    }

    // ------------------------------------------------------------------ ITransformer

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return new MappedSchema(new RetrievalClassifierMapping(this, inputSchema, _env)).OutputSchema;
    }

    /// <inheritdoc/>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var mapping = new RetrievalClassifierMapping(this, input.Schema, _env);
        WarnOfKeysThatAreNotTheScoreSlots(input.Schema);
        return new BatchedRetrievalDataView(new MappedSchema(mapping), mapping, input);
    }

    /// <summary>
    /// ML.NET's evaluator reads Score slot i as key i + 1 of the label column and never compares the key's names with the
    /// slots'. A label column keyed again for the test rows (a MapValueToKey fitted on them) names other labels from some
    /// key on: the model's labels in another order when its first row holds another label (the evaluator would score
    /// swapped labels), or fewer or other labels when the rows are a slice (all of one label: [neg] where the slots are
    /// [pos, neg], and a student right on every row reads 0 %). An input key column whose key i + 1 names another label
    /// than slot i is warned about, with both lists; a key column that names none of the model's labels is not a label column.
    /// </summary>
    private void WarnOfKeysThatAreNotTheScoreSlots(DataViewSchema schema)
    {
        var labels = LabelNames;
        foreach (var column in schema)
        {
            if (column.IsHidden || LabelColumn.AnnotatedKeyNames(column) is not { } keys) continue;
            int differs = Enumerable.Range(0, Math.Min(keys.Length, labels.Count)).FirstOrDefault(i => !string.Equals(keys[i], labels[i], StringComparison.Ordinal), -1);
            if (differs < 0 || !keys.Intersect(labels, StringComparer.Ordinal).Any()) continue;
            bool reordered = keys.Length == labels.Count
                && keys.Order(StringComparer.Ordinal).SequenceEqual(labels.Order(StringComparer.Ordinal), StringComparer.Ordinal);
            new ComponentHost(_env, nameof(RetrievalClassifierTransformer)).Warning(reordered
                ? $"Input column '{column.Name}' is a key of the model's labels in the order [{string.Join(", ", keys)}], but Score slot i is label i of " +
                  $"[{string.Join(", ", labels)}] (PredictedLabel's keys too); ML.NET's evaluator reads slot i as key i + 1 and would score swapped labels. " +
                  "Make the keys with the model's order (the MapValueToKey fitted for training)."
                : $"Input column '{column.Name}' is a key of the labels [{string.Join(", ", keys)}], but Score slot i is label i of " +
                  $"[{string.Join(", ", labels)}] (PredictedLabel's keys too); ML.NET's evaluator reads slot i as key i + 1 and would score label " +
                  $"'{labels[differs]}' as '{keys[differs]}'. Make the keys with the model's labels (the MapValueToKey fitted for training).");
        }
    }

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return new MappedRowToRowMapper(new MappedSchema(new RetrievalClassifierMapping(this, inputSchema, _env)));
    }

    /// <summary>Ends the use of this transformer: later calls throw <see cref="ObjectDisposedException"/>. Idempotent.</summary>
    public void Dispose() => Interlocked.Exchange(ref _disposed, 1);

    // ------------------------------------------------------------------ persistence

    void ICanSaveModel.Save(ModelSaveContext ctx) => ModelWriter.Save(ctx, Format, w =>
    {
        var model = Model;
        var c = model.Config;
        w.WriteString(Columns.Text);
        w.WriteStringOrNull(Columns.Text2);
        w.WriteString(Columns.Score);
        w.WriteString(Columns.PredictedLabel);
        w.WriteStringOrNull(Columns.Neighbors);
        w.Writer.Write(Columns.NeighborsToReport);
        w.Writer.Write(Columns.InferenceBatchSize);
        w.Writer.Write(c.VocabularySize);
        w.Writer.Write(c.HiddenSize);
        w.Writer.Write(c.Layers);
        w.Writer.Write(c.Heads);
        w.Writer.Write(c.FeedForwardSize);
        w.Writer.Write(c.MaxLength);
        w.Writer.Write((int)c.Pooling);
        w.Writer.Write(c.LabelCount);
        w.Writer.Write(c.Dropout);
        w.Writer.Write(RetrievalWeight);
        w.Writer.Write(model.Temperature);
        w.Writer.Write(model.NeighborCount);
        w.Writer.Write(TeacherParameterCount ?? -1);
        w.Writer.Write(_saveStoreTexts);
        w.Writer.Write(model.Tokenizer.Vocabulary.LowerCase);
        w.WriteStream("Vocabulary.txt", model.Tokenizer.Vocabulary.WriteTokens);
        w.WriteStream("Store.bin", s => model.Store.Write(s.BaseStream, _saveStoreTexts));
        w.WriteStream("Weights.bin", model.Weights.Write);
        w.Writer.Write(LexicalRetrievalWeight);
        w.Writer.Write(model.Lexical is not null);
        w.Writer.Write(model.LexicalNeighborCount);
        w.Writer.Write(model.LexicalTemperature);
        if (model.Lexical is { } lexical) w.WriteStream("Lexical.bin", lexical.Write);
        w.Writer.Write(model.Backbone is not null);
        if (model.Backbone is { } backbone)
        {
            w.WriteString(backbone.Description);
            w.Writer.Write((int)backbone.Pooling);
            backbone.Weights.WriteShape(w.Writer);
            w.WriteStream(StudentBackbone.PartName, backbone.Weights.Write);
            w.Writer.Write((int)backbone.Segments);
        }
        w.WriteStringOrNull(Columns.LabelValueType?.RawType.Name);
    });

    internal static RetrievalClassifierTransformer Load(ModelReader r)
    {
        var rd = r.Reader;
        var text = r.ReadString();
        var text2 = r.ReadStringOrNull();
        var score = r.ReadString();
        var predicted = r.ReadString();
        var neighbors = r.ReadStringOrNull();
        int report = rd.ReadInt32(), inferenceBatch = rd.ReadInt32();
        int vocabularySize = rd.ReadInt32(), hidden = rd.ReadInt32(), layers = rd.ReadInt32(), heads = rd.ReadInt32(), ffn = rd.ReadInt32();
        int maxLength = rd.ReadInt32(), pooling = rd.ReadInt32(), labels = rd.ReadInt32();
        double dropout = rd.ReadDouble(), lambda = rd.ReadDouble(), temperature = rd.ReadDouble();
        int neighborCount = rd.ReadInt32();
        long teacher = rd.ReadInt64();
        bool saveTexts = rd.ReadBoolean(), lowerCase = rd.ReadBoolean();
        if (!Enum.IsDefined((StudentPooling)pooling)) throw new InvalidDataException($"RetrievalClassifier in model.zip: unknown pooling {pooling}.");
        var config = new StudentConfig(vocabularySize, hidden, layers, heads, ffn, maxLength, (StudentPooling)pooling, labels, dropout);
        try { config.Validate(); }
        catch (ArgumentException e) { throw new InvalidDataException($"RetrievalClassifier in model.zip: {e.Message}", e); }

        string[] tokens = [];
        r.ReadStream("Vocabulary.txt", s => tokens = WordPieceVocabulary.ReadTokens(s, "RetrievalClassifier in model.zip", vocabularySize));
        var vocabulary = WordPieceVocabulary.FromTokens(tokens, lowerCase, "model.zip RetrievalClassifier vocabulary");
        KnowledgeStore? store = null;
        r.ReadStream("Store.bin", s => store = KnowledgeStore.Read(s.BaseStream, StoreReadLimits.ForPart(s.BaseStream.Length)));
        StudentWeights? weights = null;
        r.ReadStream("Weights.bin", s => weights = StudentWeights.Read(s, "RetrievalClassifier in model.zip, Weights.bin")
            .Without(StudentWeights.TemperatureName)); // an older model's learned τ: the number above is the τ it predicts with
        // Factored token embeddings are known by their projection; its width is the rank.
        if (weights!.ShapeOf(StudentConfig.EmbeddingProjectionName) is { Length: 2 } projection)
            config = config with { EmbeddingRank = checked((int)projection[1]) };
        double mu = 0, lexicalTemperature = 1;
        int lexicalK = 0;
        LexicalIndex? lexical = null;
        if (r.Version >= LexicalVersion)
        {
            mu = rd.ReadDouble();
            bool hasLexical = rd.ReadBoolean();
            lexicalK = rd.ReadInt32();
            lexicalTemperature = rd.ReadDouble();
            if (hasLexical)
                r.ReadStream("Lexical.bin", s => lexical = LexicalIndex.Read(s, store!.Count, vocabularySize, "RetrievalClassifier in model.zip, Lexical.bin"));
            else if (mu != 0)
                throw new InvalidDataException($"RetrievalClassifier in model.zip: term-match weight μ = {mu} but no term-match index was saved.");
        }
        StudentBackbone? backbone = r.Version >= BackboneVersion && rd.ReadBoolean() ? ReadBackbone(r, vocabulary.SepId) : null;
        var labelValueType = r.Version >= LabelValueTypeVersion ? LabelColumn.KeyValueType(r.ReadStringOrNull(), "RetrievalClassifier in model.zip") : null;
        RetrievalModel model;
        try
        {
            model = new RetrievalModel(config, weights!, new TextTokenizingTransformer(r.Environment, text, text2, "TokenIds", maxLength, vocabulary),
                store!, temperature, neighborCount, lexical, lexicalK, lexicalTemperature, backbone: backbone);
            return new RetrievalClassifierTransformer(r.Environment, model, lambda,
                new TransformerColumns(text, text2, score, predicted, neighbors, report, inferenceBatch, labelValueType), teacher > 0 ? teacher : null, saveTexts, mu);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"RetrievalClassifier in model.zip: {e.Message}", e);
        }
    }

    private static StudentBackbone ReadBackbone(ModelReader r, int sepId)
    {
        var rd = r.Reader;
        string description = r.ReadString();
        int pooling = rd.ReadInt32();
        if (!Enum.IsDefined((BertPooling)pooling)) throw new InvalidDataException($"RetrievalClassifier in model.zip: unknown backbone pooling {pooling}.");
        var weights = BertWeights.ReadPart(r, StudentBackbone.PartName, "RetrievalClassifier in model.zip, " + StudentBackbone.PartName);
        // A backbone saved before the pair token types were written was trained and keyed with all of them 0.
        var segments = BertEncoderSource.ReadSegments(r, PairSegmentsVersion, "RetrievalClassifier in model.zip, backbone");
        return new StudentBackbone(weights, (BertPooling)pooling, description, sepId, segments);
    }
}
