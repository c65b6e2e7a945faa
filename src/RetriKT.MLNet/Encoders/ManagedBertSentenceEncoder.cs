using System.Numerics.Tensors;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Encoders;

/// <summary>
/// A pretrained BERT-family sentence encoder in the runtime, without TorchSharp: WordPiece tokenization (BERT's
/// reference rules), the managed forward pass (<see cref="ManagedBertEncoder"/>), mean or [CLS] pooling, optional unit
/// normalisation. Loads what the training assembly's TorchSharp <c>BertSentenceEncoder</c> loads, a
/// SentenceTransformers.* package DLL (see <see cref="PretrainedEncoderPackage"/>) or a Hugging Face BERT directory,
/// and gives the same embeddings (≤ 1e-4). As an <see cref="IStoreEncoder"/> it gives a knowledge store its retrieval
/// keys (<c>store.WithEmbeddings(encoder)</c>) in an application that references only RetriKT.MLNet.
/// Thread-safe; sentences of a call are encoded in parallel.
/// </summary>
public sealed class ManagedBertSentenceEncoder : IStoreEncoder
{
    /// <summary>Options; the defaults reproduce sentence-transformers' embeddings for the known packages.</summary>
    public sealed class Options
    {
        /// <summary>
        /// Pooling; null = the package's own (<see cref="PretrainedEncoderPackage.Pooling"/>), a sentence-transformers
        /// directory's (<c>modules.json</c> → its Pooling module's <c>config.json</c>), or mean for anything else.
        /// </summary>
        public BertPooling? Pooling { get; set; }
        /// <summary>Scale every embedding to unit L2 norm. Default true (what sentence-transformers' models do).</summary>
        public bool Normalize { get; set; } = true;
        /// <summary>
        /// Longest input in tokens including [CLS] and [SEP]; longer texts are truncated. null (default) = the package's
        /// own (<see cref="PretrainedEncoderPackage.MaxSequenceLength"/>: MiniLM 256, arctic-embed-xs 512); a directory's
        /// <c>sentence_bert_config.json</c> <c>max_seq_length</c>, else the smaller of config.json's
        /// <c>max_position_embeddings</c> and tokenizer_config.json's <c>model_max_length</c> (as sentence-transformers);
        /// 256 for an unknown package.
        /// </summary>
        public int? MaxTokens { get; set; }
        /// <summary>Threads encoding one call's sentences (each sentence runs on one). Default: all processors.</summary>
        public int MaxDegreeOfParallelism { get; set; } = Environment.ProcessorCount;
        /// <summary>
        /// Attention heads of an ONNX model of an unknown package. null (default) = what the graph's attention reshapes
        /// say, else 12; a value the graph contradicts fails naming both.
        /// </summary>
        public int? OnnxNumHeads { get; set; }
        /// <summary>LayerNorm epsilon of an ONNX model (not stored in the weights). Default 1e-12 (BERT's).</summary>
        public double OnnxLayerNormEpsilon { get; set; } = 1e-12;
    }

    private readonly ManagedBertEncoder _encoder;
    private readonly int _maxTokens;
    private readonly int _maxDegreeOfParallelism;

    private ManagedBertSentenceEncoder(BertEncoderSource source, Options options, int maxTokens)
    {
        _maxTokens = maxTokens;
        _encoder = new ManagedBertEncoder(source.Weights, source.Vocabulary.SepId, source.Segments);
        // The settings are copied: the caller's Options object may be changed or reused for another encoder afterwards,
        // and this one must keep embedding (and fingerprinting) as it was loaded.
        Normalize = options.Normalize;
        _maxDegreeOfParallelism = options.MaxDegreeOfParallelism;
        Vocabulary = source.Vocabulary;
        Pooling = source.Pooling;
        Source = source.Weights.Source;
        Parts = source;
        // Hashing the weights takes a moment: only a store or a retriever that asks pays for it.
        bool normalize = Normalize;
        _fingerprint = new Lazy<string>(() => source.Fingerprint(maxTokens, normalize));
    }

    private readonly Lazy<string> _fingerprint;

    /// <summary>
    /// Content hash of the weights (pooler aside), the pooling, the vocabulary, <see cref="MaxTokens"/>, normalisation
    /// and how a pair is encoded (token types, truncation) (<see cref="IStoreEncoder.Fingerprint"/>); the training assembly's <c>BertSentenceEncoder</c> from the
    /// same source and options has the same one.
    /// </summary>
    public string Fingerprint => _fingerprint.Value;

    /// <summary>
    /// Loads <paramref name="source"/>: a SentenceTransformers.* package DLL (e.g. <c>PretrainedEncoderPackage.MiniLM.Locate()</c>)
    /// or a Hugging Face BERT directory (config.json, model.safetensors or pytorch_model.bin, vocab.txt).
    /// </summary>
    public static ManagedBertSentenceEncoder Load(string source, Options? options = null)
    {
        options ??= new Options();
        if (options.MaxDegreeOfParallelism < 1)
            throw new ArgumentOutOfRangeException(nameof(options), $"MaxDegreeOfParallelism must be positive, found {options.MaxDegreeOfParallelism}.");
        var loaded = BertEncoderSource.Load(source, options.Pooling, options.OnnxNumHeads, options.OnnxLayerNormEpsilon);
        int maxTokens = loaded.Validate(options.MaxTokens, batchSize: 1, nameof(options));
        return new ManagedBertSentenceEncoder(loaded, options, maxTokens);
    }

    /// <summary>Loads a known package from the NuGet cache or the application folder (see <see cref="PretrainedEncoderPackage.Locate"/>).</summary>
    public static ManagedBertSentenceEncoder Load(PretrainedEncoderPackage package, Options? options = null)
    {
        ArgumentNullException.ThrowIfNull(package);
        return Load(package.Locate(), options);
    }

    /// <summary>
    /// An encoder over parts already read (a saved <see cref="SentenceEmbeddingTransformer"/>), with the limit and the
    /// normalisation it was saved with; <paramref name="maxTokens"/> is checked against the weights' positions.
    /// </summary>
    internal static ManagedBertSentenceEncoder FromParts(BertEncoderSource parts, bool normalize, int maxTokens)
    {
        var options = new Options { Pooling = parts.Pooling, Normalize = normalize, MaxTokens = maxTokens };
        return new ManagedBertSentenceEncoder(parts, options, parts.Validate(maxTokens, batchSize: 1, "model.zip"));
    }

    /// <summary>What the encoder was built from: weights, vocabulary and pooling (what a saved component writes).</summary>
    internal BertEncoderSource Parts { get; }

    /// <summary>Whether embeddings are scaled to unit length (<see cref="Options.Normalize"/>).</summary>
    public bool Normalize { get; }

    /// <summary>The encoder's shape.</summary>
    public BertConfig Config => _encoder.Config;

    /// <summary>Embedding size (the hidden size).</summary>
    public int Dimension => _encoder.Config.HiddenSize;

    /// <summary>Number of weights in the checkpoint (all-MiniLM-L6-v2: 22.7M).</summary>
    public long ParameterCount => _encoder.ParameterCount;

    /// <summary>The tokenizer's vocabulary.</summary>
    public WordPieceVocabulary Vocabulary { get; }

    /// <summary>The pooling in use.</summary>
    public BertPooling Pooling { get; }

    /// <summary>Where the weights came from.</summary>
    public string Source { get; }

    /// <summary>Longest input in tokens, [CLS] and [SEP] included (<see cref="Options.MaxTokens"/>, or the package's own).</summary>
    public int MaxTokens => _maxTokens;

    /// <summary>[CLS] ids [SEP], truncated to MaxTokens.</summary>
    public int[] Tokenize(string text) => Tokenize(text, null);

    /// <summary>
    /// [CLS] a [SEP] (b [SEP]) within MaxTokens; a pair is truncated longest-first, as Hugging Face's fast tokenizer does (a
    /// model saved before 2026-12-07 keeps BERT's reference cut: <see cref="PairTruncation"/>).
    /// </summary>
    public int[] Tokenize(string text, string? text2) => BertEncoderSource.Tokenize(Vocabulary, _maxTokens, text, text2, Parts.Truncation);

    /// <summary>One embedding per text, in order ([n][Dimension]).</summary>
    public float[][] Embed(IReadOnlyList<string> texts)
    {
        ArgumentNullException.ThrowIfNull(texts);
        var flat = new float[texts.Count * Dimension];
        EmbedTokens(texts.Select(Tokenize).ToArray(), flat);
        return Enumerable.Range(0, texts.Count).Select(i => flat.AsSpan(i * Dimension, Dimension).ToArray()).ToArray();
    }

    /// <summary>
    /// Knowledge-store keys (<see cref="IStoreEncoder"/>): one embedding per text or pair, row-major. A pair is one BERT
    /// input ([CLS] a [SEP] b [SEP], b [SEP] with token type 1, as Hugging Face's tokenizer and sentence-transformers
    /// give it; a model saved before 2026-12-06 keeps type 0 throughout: <see cref="PairSegments"/>).
    /// </summary>
    public void Encode(IReadOnlyList<(string Text, string? Text2)> texts, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(texts);
        if (destination.Length < texts.Count * Dimension)
            throw new ArgumentException($"Destination holds {destination.Length} values, expected {texts.Count} × {Dimension}.", nameof(destination));
        var flat = new float[texts.Count * Dimension];
        EmbedTokens(texts.Select(t => Tokenize(t.Text, t.Text2)).ToArray(), flat);
        flat.CopyTo(destination);
    }

    private long _textsEncoded;

    /// <summary>
    /// Texts (or pairs) run through the network since this encoder was made. A served call allocates nothing of the
    /// network's, so this count is how a test sees that a row is encoded once however many columns read it.
    /// </summary>
    internal long TextsEncoded => Interlocked.Read(ref _textsEncoded);

    /// <summary>Sentences in parallel, each at its own length (no padding: see <see cref="ManagedBertEncoder"/>).</summary>
    private void EmbedTokens(int[][] sequences, float[] destination)
    {
        Interlocked.Add(ref _textsEncoded, sequences.Length);
        int h = Dimension;
        var pooling = Pooling;
        bool normalize = Normalize;
        Parallel.For(0, sequences.Length, new ParallelOptions { MaxDegreeOfParallelism = _maxDegreeOfParallelism }, i =>
        {
            var row = destination.AsSpan(i * h, h);
            _encoder.Encode(sequences[i], pooling, row);
            if (normalize)
            {
                // torch's normalize(p: 2): x / max(‖x‖, 1e-12).
                float norm = TensorPrimitives.Norm(row);
                TensorPrimitives.Divide(row, MathF.Max(norm, 1e-12f), row);
            }
        });
    }
}
