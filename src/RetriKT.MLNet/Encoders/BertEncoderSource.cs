using RetriKT.MLNet.Common;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Encoders;

/// <summary>The token type (segment) ids a BERT encoder is given for a sentence pair [CLS] a [SEP] b [SEP].</summary>
internal enum PairSegments
{
    /// <summary>Every token gets type 0: what this library did before 2026-12-06, kept for the models saved then.</summary>
    AllZero = 0,
    /// <summary>
    /// [CLS] a [SEP] get type 0, b [SEP] type 1, as Hugging Face's BERT tokenizer encodes a pair and sentence-transformers
    /// feeds it to the model. A single text is all type 0 either way.
    /// </summary>
    SecondTextOne = 1,
}

/// <summary>
/// How a BERT encoder cuts a sentence pair longer than its MaxTokens. Both cut longest-first, so a text that fits in half
/// the room is kept whole and the other fills the rest; they differ where both texts are longer than half an odd room,
/// in which text keeps the larger half.
/// </summary>
internal enum PairTruncation
{
    /// <summary>
    /// One token at a time from the longer text, from the second on a tie (BERT's reference <c>_truncate_seq_pair</c>,
    /// Hugging Face's slow tokenizers): the first text keeps the larger half. What this library did before 2026-12-07,
    /// kept for the models saved then.
    /// </summary>
    SecondOnTie = 0,
    /// <summary>
    /// Hugging Face's fast tokenizers (<c>truncate_encodings</c>, longest_first), which sentence-transformers loads: the
    /// longer text keeps the larger half, the second on a tie.
    /// </summary>
    HuggingFaceFast = 1,
}

/// <summary>
/// What a BERT sentence encoder is built from, whatever runs it: the weights, the WordPiece vocabulary and the pooling,
/// read from a SentenceTransformers.* package DLL (embedded ONNX + vocab.txt) or a Hugging Face BERT directory
/// (config.json, model.safetensors or pytorch_model.bin, vocab.txt). Shared by the TorchSharp encoder (training
/// assembly) and <see cref="ManagedBertSentenceEncoder"/> (runtime), so both read a source the same way and tokenize
/// the same way, which is what makes their embeddings comparable.
/// </summary>
internal sealed record BertEncoderSource(BertWeights Weights, WordPieceVocabulary Vocabulary, BertPooling Pooling)
{
    /// <summary>
    /// Reads <paramref name="source"/>. <paramref name="pooling"/> null = the package's own pooling, a
    /// sentence-transformers directory's (its <c>modules.json</c> Pooling module), or mean for any other directory or an
    /// unknown package. An ONNX model's number of heads is read from its graph, checked against a known package's or
    /// <paramref name="onnxNumHeads"/> (which are taken where the graph does not say); its LayerNorm epsilon is not
    /// stored in the weights and comes from <paramref name="onnxLayerNormEpsilon"/>.
    /// </summary>
    public static BertEncoderSource Load(string source, BertPooling? pooling, int? onnxNumHeads, double onnxLayerNormEpsilon)
    {
        ArgumentException.ThrowIfNullOrEmpty(source);
        if (Directory.Exists(source))
        {
            var directoryWeights = BertWeights.FromHuggingFaceDirectory(source);
            // Read once for what it sets: lower-casing, the tokenizer's length limit, and options this tokenizer does not follow.
            var tokenizerConfigPath = Path.Combine(source, "tokenizer_config.json");
            var tokenizerConfig = File.Exists(tokenizerConfigPath) ? JsonFiles.ReadObject(tokenizerConfigPath) : null;
            RequireFollowedTokenizerOptions(tokenizerConfigPath, tokenizerConfig);
            return new BertEncoderSource(directoryWeights,
                WordPieceVocabulary.Load(Path.Combine(source, "vocab.txt"), LowerCase(source, tokenizerConfigPath, tokenizerConfig)),
                pooling ?? SentenceTransformersPooling(source) ?? BertPooling.Mean)
            {
                DirectoryMaxTokens = SentenceTransformersMaxLength(source)
                    ?? TransformerMaxLength(tokenizerConfigPath, tokenizerConfig, directoryWeights.Config.MaxPositions),
            };
        }
        if (!File.Exists(source))
            throw new FileNotFoundException($"BERT encoder source not found: '{source}' is neither a package DLL nor a Hugging Face directory.", source);
        var (modelName, model) = EmbeddedResources.ReadBySuffix(source, "model.onnx");
        // Known by its resource name, not the file name: a renamed copy is still the same model (heads, pooling, length).
        var package = PretrainedEncoderPackage.ForModelResource(modelName);
        var weights = BertWeights.FromOnnx(model, package?.NumHeads ?? onnxNumHeads, onnxLayerNormEpsilon, $"{source}!{modelName}",
            package is null ? "OnnxNumHeads" : $"{package.PackageId}'s known layout");
        var (vocabName, vocab) = EmbeddedResources.ReadBySuffix(source, "vocab.txt");
        // A package DLL carries no tokenizer_config.json: the known packages are uncased, and an unknown one is cased when
        // its vocabulary says so (lower-casing a cased model's input would be wrong with no error).
        var tokens = EmbeddedResources.ReadLines(vocab);
        var vocabulary = WordPieceVocabulary.FromTokens(tokens, lowerCase: package is not null || WordPieceVocabulary.LooksUncased(tokens), $"{source}!{vocabName}");
        return new BertEncoderSource(weights, vocabulary, pooling ?? package?.Pooling ?? BertPooling.Mean) { Package = package };
    }

    /// <summary>The known package the weights came from, or null (a directory or an unknown package).</summary>
    public PretrainedEncoderPackage? Package { get; init; }

    /// <summary>
    /// The segment ids of a sentence pair: <see cref="PairSegments.SecondTextOne"/> (Hugging Face's) for every source
    /// read now; a model saved before 2026-12-06 restores <see cref="PairSegments.AllZero"/>, so it keeps the embeddings
    /// it was trained and keyed with.
    /// </summary>
    public PairSegments Segments { get; init; } = PairSegments.SecondTextOne;

    /// <summary>
    /// How a pair that does not fit is cut: <see cref="PairTruncation.HuggingFaceFast"/> for every source read now; a model
    /// saved before 2026-12-07 restores <see cref="PairTruncation.SecondOnTie"/>, so it keeps the keys it made.
    /// </summary>
    public PairTruncation Truncation { get; init; } = PairTruncation.HuggingFaceFast;

    /// <summary>
    /// Where token type 1 starts in <paramref name="ids"/> under <paramref name="segments"/>: where a pair's second text
    /// starts (<see cref="WordPieceVocabulary.SecondTextStart"/>), else <c>ids.Length</c> (a single text, or
    /// <see cref="PairSegments.AllZero"/>).
    /// </summary>
    public static int SecondSegmentStart(ReadOnlySpan<int> ids, int sepId, PairSegments segments)
        => segments == PairSegments.AllZero ? ids.Length : WordPieceVocabulary.SecondTextStart(ids, sepId);

    /// <summary>
    /// The pair token types a saved encoder was written with (its model.zip writes <c>(int)</c><see cref="Segments"/> from
    /// format <paramref name="writtenSince"/> on): an older file's encoder gave every token type 0, and keeps doing so. An
    /// unknown value fails naming <paramref name="where"/>.
    /// </summary>
    internal static PairSegments ReadSegments(Bridge.ModelReader r, uint writtenSince, string where)
        => ReadConvention(r, writtenSince, PairSegments.AllZero, where, "pair segments");

    /// <summary>
    /// The pair cut a saved encoder was written with (its model.zip writes <c>(int)</c><see cref="Truncation"/> from format
    /// <paramref name="writtenSince"/> on): an older file's encoder cut as BERT's reference, and keeps doing so. An unknown
    /// value fails naming <paramref name="where"/>.
    /// </summary>
    internal static PairTruncation ReadTruncation(Bridge.ModelReader r, uint writtenSince, string where)
        => ReadConvention(r, writtenSince, PairTruncation.SecondOnTie, where, "pair truncation");

    private static TConvention ReadConvention<TConvention>(Bridge.ModelReader r, uint writtenSince, TConvention before, string where, string what)
        where TConvention : struct, Enum
    {
        if (r.Version < writtenSince) return before;
        int value = r.Reader.ReadInt32();
        var convention = (TConvention)Enum.ToObject(typeof(TConvention), value);
        return Enum.IsDefined(convention) ? convention : throw new InvalidDataException($"{where}: unknown {what} {value}.");
    }

    /// <summary>
    /// A directory's own limit, as sentence-transformers takes it: its <c>sentence_bert_config.json</c>
    /// <c>max_seq_length</c>, else the smaller of the model's positions and the tokenizer's <c>model_max_length</c>
    /// (<see cref="TransformerMaxLength"/>); null for a package, and for parts read back from a saved model, which
    /// carries its own limit.
    /// </summary>
    public int? DirectoryMaxTokens { get; init; }

    /// <summary>
    /// MaxTokens when the options leave it unset: the package's own (<see cref="PretrainedEncoderPackage.MaxSequenceLength"/>),
    /// a directory's (<see cref="DirectoryMaxTokens"/>), else (an unknown package)
    /// <see cref="PretrainedEncoderPackage.FallbackMaxSequenceLength"/>.
    /// </summary>
    public int DefaultMaxTokens => Package?.MaxSequenceLength ?? DirectoryMaxTokens ?? PretrainedEncoderPackage.FallbackMaxSequenceLength;

    /// <summary>
    /// <c>max_seq_length</c> of a sentence-transformers directory's <c>sentence_bert_config.json</c>, where the model
    /// truncates (arctic-embed-xs 512, all-MiniLM-L6-v2 256); null without the file or the field. A value that is not a
    /// positive integer is refused naming the file.
    /// </summary>
    private static int? SentenceTransformersMaxLength(string directory)
    {
        var path = Path.Combine(directory, "sentence_bert_config.json");
        if (!File.Exists(path)) return null;
        var node = JsonFiles.ReadObject(path)["max_seq_length"];
        if (node is null) return null;
        return node is System.Text.Json.Nodes.JsonValue v && v.TryGetValue<int>(out var n) && n > 0 ? n
            : throw new InvalidDataException($"{path}: field 'max_seq_length': expected a positive integer, found {node.ToJsonString()}.");
    }

    /// <summary>
    /// The limit sentence-transformers' Transformer module takes when nothing sets <c>max_seq_length</c> (a plain Hugging
    /// Face directory, or a <c>sentence_bert_config.json</c> without the field): the smaller of the model's positions
    /// (config.json <c>max_position_embeddings</c>, <paramref name="maxPositions"/>) and the tokenizer's
    /// <c>model_max_length</c>. transformers reads that from <c>tokenizer_config.json</c> (older files: <c>max_len</c>);
    /// a tokenizer without one (no file, no field, null) gets int(1e30), a "no limit" that files also carry written out
    /// (1000000000000000019884624838656), and so the positions decide. A fixed 256 here cut a 512-position model's long
    /// inputs short of where the Python library reads them. A value that is not a positive integer is refused naming the
    /// file and the field.
    /// </summary>
    private static int TransformerMaxLength(string path, System.Text.Json.Nodes.JsonObject? tokenizerConfig, int maxPositions)
    {
        if (tokenizerConfig is null) return maxPositions;
        // As transformers: model_max_length when the key is there (even null), else the legacy max_len.
        string field = tokenizerConfig.ContainsKey("model_max_length") ? "model_max_length" : "max_len";
        var node = tokenizerConfig[field];
        if (node is null) return maxPositions;
        // Read as a double: the sentinel does not fit an int (or a long), and only its size matters.
        return node is System.Text.Json.Nodes.JsonValue v && v.GetValueKind() == System.Text.Json.JsonValueKind.Number
            && v.TryGetValue<double>(out var limit) && limit >= 1 && limit == Math.Floor(limit)
            ? (int)Math.Min(limit, maxPositions)
            : throw new InvalidDataException($"{path}: field '{field}': expected a positive integer, found {node.ToJsonString()}.");
    }

    /// <summary>
    /// Refuses tokenizer settings this tokenizer does not follow, with which it would give other ids than the model's own
    /// tokenizer without a word: <c>truncation_side</c> "left" (transformers keeps the end of a long text, of each text
    /// for a pair, where this keeps the start, as "right", the default, does) and <c>tokenize_chinese_chars</c> false (a
    /// run of CJK ideographs stays one word, where this makes each ideograph a word, as true, the default, does).
    /// </summary>
    private static void RequireFollowedTokenizerOptions(string path, System.Text.Json.Nodes.JsonObject? tokenizerConfig)
    {
        var side = tokenizerConfig?["truncation_side"];
        if (side is not null && !(side is System.Text.Json.Nodes.JsonValue v && v.TryGetValue<string>(out var text) && text == "right"))
            throw new NotSupportedException($"{path}: truncation_side {side.ToJsonString()} is not supported; this encoder keeps the start of a long text (truncation_side \"right\").");
        if (tokenizerConfig?["tokenize_chinese_chars"] is System.Text.Json.Nodes.JsonValue c && c.TryGetValue<bool>(out var split) && !split)
            throw new NotSupportedException($"{path}: tokenize_chinese_chars false is not supported; this tokenizer makes each CJK ideograph a word of its own (tokenize_chinese_chars true).");
    }

    /// <summary>
    /// The pooling a sentence-transformers directory declares, or null for a plain Hugging Face directory (no
    /// <c>modules.json</c>, or no Pooling module in it). <c>modules.json</c> names the Pooling module's folder, whose
    /// <c>config.json</c> sets <c>pooling_mode_*</c>; without this a [CLS]-pooled model (bge, arctic-embed) was silently
    /// mean-pooled. A module this encoder does not run (Dense, another Transformer ...) changes every embedding, and a
    /// pooling mode other than exactly one of [CLS] and mean is not what it computes: both fail naming the file.
    /// </summary>
    private static BertPooling? SentenceTransformersPooling(string directory)
    {
        var modulesPath = Path.Combine(directory, "modules.json");
        if (!File.Exists(modulesPath)) return null;
        string? poolingFolder = null;
        bool transformer = false;
        foreach (var module in JsonFiles.ReadArray(modulesPath))
        {
            string? type = module?["type"] is System.Text.Json.Nodes.JsonValue t && t.TryGetValue<string>(out var text) ? text : null;
            string? folder = module?["path"] is System.Text.Json.Nodes.JsonValue f && f.TryGetValue<string>(out var p) ? p : null;
            switch (type?[(type.LastIndexOf('.') + 1)..])
            {
                case "Transformer" when !transformer: transformer = true; break;
                case "Pooling" when poolingFolder is null && folder is not null: poolingFolder = folder; break;
                case "Normalize": break; // unit length: Options.Normalize, on by default
                default:
                    throw new NotSupportedException($"{modulesPath}: module {module?.ToJsonString()} is not supported; expected one Transformer, " +
                        "one Pooling and optionally Normalize (anything else changes the embeddings this encoder would give).");
            }
        }
        if (poolingFolder is null) return null;
        var configPath = Path.Combine(directory, poolingFolder, "config.json");
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{modulesPath} names the pooling module '{poolingFolder}', but {configPath} is not there.", configPath);
        var modes = JsonFiles.ReadObject(configPath)
            .Where(kv => kv.Key.StartsWith("pooling_mode_", StringComparison.Ordinal) && kv.Value is System.Text.Json.Nodes.JsonValue v && v.TryGetValue<bool>(out var on) && on)
            .Select(kv => kv.Key).ToList();
        return modes switch
        {
            ["pooling_mode_cls_token"] => BertPooling.Cls,
            ["pooling_mode_mean_tokens"] => BertPooling.Mean,
            _ => throw new NotSupportedException($"{configPath}: pooling {(modes.Count == 0 ? "(none set)" : string.Join(" + ", modes))} is not supported; " +
                "expected exactly one of pooling_mode_cls_token and pooling_mode_mean_tokens true (or set Options.Pooling)."),
        };
    }

    /// <summary>
    /// Whether the directory's tokenizer lower-cases (and so strips accents): <c>tokenizer_config.json</c>'s
    /// <c>do_lower_case</c>, true when the file or the field is absent (BertTokenizer's default). A cased model read as
    /// uncased would lose every capital and accent without a word. An explicit <c>strip_accents</c> that differs from
    /// <c>do_lower_case</c> is not what this tokenizer does, and fails with the file and the values; so does a
    /// <c>sentence_bert_config.json</c> that lower-cases text before a cased tokenizer.
    /// </summary>
    private static bool LowerCase(string directory, string path, System.Text.Json.Nodes.JsonObject? root)
    {
        if (root is null) return true;
        static bool? Flag(System.Text.Json.Nodes.JsonNode? node) => node is System.Text.Json.Nodes.JsonValue v && v.TryGetValue<bool>(out var b) ? b : null;
        bool lowerCase = Flag(root["do_lower_case"]) ?? true;
        if (Flag(root["strip_accents"]) is { } strip && strip != lowerCase)
            throw new NotSupportedException($"{path}: strip_accents {strip.ToString().ToLowerInvariant()} with do_lower_case {lowerCase.ToString().ToLowerInvariant()} is not supported; accents are stripped exactly when text is lower-cased.");
        // sentence-transformers lower-cases the text itself (accents kept) before a cased tokenizer when its
        // sentence_bert_config.json says do_lower_case; read as cased, every capital would reach the model.
        var sentenceConfig = Path.Combine(directory, "sentence_bert_config.json");
        if (!lowerCase && File.Exists(sentenceConfig) && Flag(JsonFiles.ReadObject(sentenceConfig)["do_lower_case"]) == true)
            throw new NotSupportedException($"{sentenceConfig}: do_lower_case true over a cased tokenizer ({path}: do_lower_case false) is not supported; " +
                "this tokenizer lower-cases only together with stripping accents.");
        return lowerCase;
    }

    /// <summary>
    /// Checks the options every encoder shares against the weights and the vocabulary, and returns the MaxTokens in use:
    /// <paramref name="requested"/>, or <see cref="DefaultMaxTokens"/> when it is null.
    /// </summary>
    public int Validate(int? requested, int batchSize, string optionsName)
    {
        int maxTokens = requested ?? DefaultMaxTokens;
        var config = Weights.Config;
        if (maxTokens < 3 || maxTokens > config.MaxPositions)
            throw new ArgumentOutOfRangeException(optionsName, $"MaxTokens must be in [3, {config.MaxPositions}], found {maxTokens}.");
        if (batchSize < 1) throw new ArgumentOutOfRangeException(optionsName, $"BatchSize must be positive, found {batchSize}.");
        if (Vocabulary.Count != config.VocabSize)
            throw new InvalidDataException($"{Weights.Source}: vocab.txt has {Vocabulary.Count} tokens, but the embeddings have {config.VocabSize} rows.");
        return maxTokens;
    }

    /// <summary>
    /// The fingerprint (<see cref="Knowledge.IStoreEncoder.Fingerprint"/>) of a sentence encoder built from this source
    /// with <paramref name="maxTokens"/> and <paramref name="normalize"/>: the TorchSharp and the managed encoder give the
    /// same embeddings for the same source and settings, so they share it. The kind's version is the pair segment
    /// convention (<see cref="Segments"/>): keys made with segment ids all 0 are not a pair's keys now. Hugging Face's
    /// pair cut (<see cref="Truncation"/>) is hashed too, and an encoder that cuts as before keeps its fingerprint.
    /// </summary>
    public string Fingerprint(int maxTokens, bool normalize)
    {
        using var fingerprint = new ContentFingerprint(Segments == PairSegments.AllZero ? "bert-sentence-encoder/1" : "bert-sentence-encoder/2");
        if (Truncation != PairTruncation.SecondOnTie) fingerprint.Add("pair-truncation").Add((long)Truncation);
        Weights.AddTo(fingerprint, Pooling);
        return fingerprint.Add(Vocabulary).Add((long)maxTokens).Add(normalize).Finish();
    }

    /// <summary>
    /// [CLS] a [SEP] (b [SEP]) within <paramref name="maxTokens"/>; a pair that does not fit is cut longest-first by the
    /// rule of <paramref name="truncation"/>.
    /// </summary>
    public static int[] Tokenize(WordPieceVocabulary vocabulary, int maxTokens, string text, string? text2, PairTruncation truncation)
    {
        int budget = Math.Max(maxTokens - (text2 is null ? 2 : 3), 0);
        // Neither text keeps more than the budget: a long text is read only one token past it.
        var a = vocabulary.Encode(text ?? "", budget + 1);
        var b = text2 is null ? [] : vocabulary.Encode(text2, budget + 1);
        if (a.Count + b.Count > budget)
        {
            int keepA, keepB;
            if (2 * Math.Min(a.Count, b.Count) <= budget)
                // The shorter text (none, for a single text) fits in half the room: kept whole, the longer fills the rest.
                (keepA, keepB) = a.Count <= b.Count ? (a.Count, budget - a.Count) : (budget - b.Count, b.Count);
            else
            {
                // Both are longer than half the room and share it; an odd room's extra token goes to the first text in
                // BERT's reference, to the longer one (the second on a tie) in Hugging Face's fast tokenizer.
                int half = budget / 2;
                bool firstKeepsMore = budget % 2 == 1
                    && (truncation == PairTruncation.SecondOnTie || FirstIsLonger(vocabulary, text!, text2!, a.Count, b.Count, budget));
                (keepA, keepB) = firstKeepsMore ? (budget - half, half) : (half, budget - half);
            }
            a.RemoveRange(keepA, a.Count - keepA);
            b.RemoveRange(keepB, b.Count - keepB);
        }
        return text2 is null ? [vocabulary.ClsId, .. a, vocabulary.SepId] : [vocabulary.ClsId, .. a, vocabulary.SepId, .. b, vocabulary.SepId];
    }

    /// <summary>
    /// Whether the first text of a pair has more tokens than the second, from the <paramref name="readA"/> and
    /// <paramref name="readB"/> tokens read of them (at most <paramref name="budget"/> + 1 each): only when both were read
    /// that far are more needed, and then the two are counted only until the shorter ends.
    /// </summary>
    private static bool FirstIsLonger(WordPieceVocabulary vocabulary, string text, string text2, int readA, int readB, int budget)
        => readA != readB ? readA > readB : readA > budget && vocabulary.HasMoreTokens(text, text2);
}
