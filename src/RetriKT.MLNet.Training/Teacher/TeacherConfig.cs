using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Teacher;

/// <summary>The decoder architectures the teacher supports.</summary>
public enum TeacherArchitecture
{
    /// <summary>LLaMA family (LLaMA-2/3, Mistral, Qwen2, llama2.c): RMSNorm, rotary positions, GQA, SwiGLU.</summary>
    Llama,
    /// <summary>GPT-2: learned positions, LayerNorm, GELU (tanh) MLP, fused q|k|v projection.</summary>
    Gpt2,
}

/// <summary>
/// Shape and hyper-parameters of a teacher LLM, read from (and written to) a Hugging Face <c>config.json</c>.
/// Supported <c>model_type</c>s: <c>llama</c>, <c>mistral</c>, <c>qwen2</c> and <c>gpt2</c>. Anything outside what the
/// modules implement is rejected by <see cref="Validate"/> with the offending field named.
/// </summary>
public sealed record TeacherConfig
{
    /// <summary>The HF <c>model_type</c> string ("llama", "mistral", "qwen2", "gpt2").</summary>
    public string ModelType { get; init; } = "llama";
    /// <summary>Vocabulary size (rows of the embedding matrix).</summary>
    public int VocabSize { get; init; } = 512;
    /// <summary>Model width.</summary>
    public int HiddenSize { get; init; } = 64;
    /// <summary>MLP inner width.</summary>
    public int IntermediateSize { get; init; } = 172;
    /// <summary>Number of decoder blocks.</summary>
    public int NumLayers { get; init; } = 4;
    /// <summary>Number of query heads.</summary>
    public int NumHeads { get; init; } = 4;
    /// <summary>Number of key/value heads (grouped-query attention when smaller than <see cref="NumHeads"/>).</summary>
    public int NumKeyValueHeads { get; init; } = 4;
    /// <summary>Width of one head; <c>HiddenSize / NumHeads</c> unless the checkpoint says otherwise.</summary>
    public int HeadDim { get; init; } = 16;
    /// <summary>Longest sequence (positions) the model accepts.</summary>
    public int MaxPositions { get; init; } = 512;
    /// <summary>Epsilon of RMSNorm / LayerNorm.</summary>
    public double NormEpsilon { get; init; } = 1e-5;
    /// <summary>Rotary base (theta). LLaMA-2 10000, LLaMA-3 500000, Qwen2 1000000.</summary>
    public double RopeTheta { get; init; } = 10000;
    /// <summary>Rotary scaling kind: null, "linear" or "llama3".</summary>
    public string? RopeScalingType { get; init; }
    /// <summary>Rotary scaling factor (linear, llama3).</summary>
    public double RopeScalingFactor { get; init; } = 1;
    /// <summary>LLaMA-3.1 rope scaling: low_freq_factor.</summary>
    public double RopeLowFreqFactor { get; init; } = 1;
    /// <summary>LLaMA-3.1 rope scaling: high_freq_factor.</summary>
    public double RopeHighFreqFactor { get; init; } = 4;
    /// <summary>LLaMA-3.1 rope scaling: original_max_position_embeddings.</summary>
    public int RopeOriginalMaxPositions { get; init; } = 8192;
    /// <summary>Bias on the q/k/v projections (Qwen2: true; LLaMA attention_bias).</summary>
    public bool QkvBias { get; init; }
    /// <summary>Bias on the attention output projection (LLaMA attention_bias).</summary>
    public bool OutputProjectionBias { get; init; }
    /// <summary>Bias on the MLP projections (LLaMA mlp_bias).</summary>
    public bool MlpBias { get; init; }
    /// <summary>Mistral sliding-window attention size, or null for full causal attention.</summary>
    public int? SlidingWindow { get; init; }
    /// <summary>Output projection shares the token embedding matrix.</summary>
    public bool TieWordEmbeddings { get; init; } = true;
    /// <summary>Activation name (LLaMA "silu"; GPT-2 "gelu_new", "gelu_pytorch_tanh" or "gelu").</summary>
    public string Activation { get; init; } = "silu";
    /// <summary>Beginning-of-sequence id, if the model has one.</summary>
    public int? BosTokenId { get; init; }
    /// <summary>End-of-sequence ids (generation stops on any of them).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    /// <summary>Padding id, if the model has one.</summary>
    public int? PadTokenId { get; init; }

    /// <summary>The architecture implied by <see cref="ModelType"/>.</summary>
    public TeacherArchitecture Architecture => ModelType == "gpt2" ? TeacherArchitecture.Gpt2 : TeacherArchitecture.Llama;

    private static readonly string[] LlamaTypes = ["llama", "mistral", "qwen2"];
    private static readonly string[] GeluNames = ["gelu_new", "gelu_pytorch_tanh", "gelu", "gelu_fast"];

    /// <summary>Throws <see cref="NotSupportedException"/> or <see cref="InvalidDataException"/> naming the field when the config is outside what we support.</summary>
    public TeacherConfig Validate(string source = "config")
    {
        if (!LlamaTypes.Contains(ModelType) && ModelType != "gpt2")
            throw new NotSupportedException($"{source}: model_type '{ModelType}' is not supported; expected one of llama, mistral, qwen2, gpt2.");
        void Positive(string field, long value)
        {
            if (value <= 0) throw new InvalidDataException($"{source}: field '{field}' must be > 0, found {value}.");
        }
        Positive("vocab_size", VocabSize); Positive("hidden_size", HiddenSize); Positive("intermediate_size", IntermediateSize);
        Positive("num_hidden_layers", NumLayers); Positive("num_attention_heads", NumHeads); Positive("num_key_value_heads", NumKeyValueHeads);
        Positive("head_dim", HeadDim); Positive("max_position_embeddings", MaxPositions);
        // A zero or negative theta, scaling factor or epsilon (a damaged or hand-edited config) loaded and ran: every
        // logit came out NaN and generation repeated token 0, with no error.
        void Finite(string field, double value, bool zeroAllowed)
        {
            if (!double.IsFinite(value) || value < 0 || (value == 0 && !zeroAllowed))
                throw new InvalidDataException(string.Create(CultureInfo.InvariantCulture,
                    $"{source}: field '{field}' must be {(zeroAllowed ? ">= 0" : "> 0")} and finite, found {value}."));
        }
        Finite(Architecture == TeacherArchitecture.Gpt2 ? "layer_norm_epsilon" : "rms_norm_eps", NormEpsilon, zeroAllowed: true);
        if (Architecture == TeacherArchitecture.Llama)
        {
            Finite("rope_theta", RopeTheta, zeroAllowed: false);
            if (RopeScalingType is "linear" or "llama3") Finite("rope_scaling.factor", RopeScalingFactor, zeroAllowed: false);
            if (RopeScalingType == "llama3")
            {
                Finite("rope_scaling.low_freq_factor", RopeLowFreqFactor, zeroAllowed: false);
                Finite("rope_scaling.high_freq_factor", RopeHighFreqFactor, zeroAllowed: false);
            }
        }
        foreach (var (field, id) in EosTokenIds.Select(i => ("eos_token_id", (int?)i)).Append(("bos_token_id", BosTokenId)))
            if (id is int token && (token < 0 || token >= VocabSize))
                throw new InvalidDataException($"{source}: {field} {token} is outside the vocabulary [0, {VocabSize}).");
        if (NumHeads % NumKeyValueHeads != 0)
            throw new InvalidDataException($"{source}: num_attention_heads ({NumHeads}) must be a multiple of num_key_value_heads ({NumKeyValueHeads}).");
        if (HeadDim % 2 != 0 && Architecture == TeacherArchitecture.Llama)
            throw new InvalidDataException($"{source}: head_dim must be even for rotary embeddings, found {HeadDim}.");
        if (Architecture == TeacherArchitecture.Llama)
        {
            if (Activation != "silu")
                throw new NotSupportedException($"{source}: hidden_act '{Activation}' is not supported for {ModelType}; expected 'silu'.");
            if (RopeScalingType is not (null or "linear" or "llama3" or "default"))
                throw new NotSupportedException($"{source}: rope_scaling.type '{RopeScalingType}' is not supported; expected null, 'linear' or 'llama3'.");
        }
        else
        {
            if (!GeluNames.Contains(Activation))
                throw new NotSupportedException($"{source}: activation_function '{Activation}' is not supported for gpt2; expected one of {string.Join(", ", GeluNames)}.");
            if (NumKeyValueHeads != NumHeads)
                throw new InvalidDataException($"{source}: gpt2 has no grouped-query attention (num_key_value_heads {NumKeyValueHeads} != n_head {NumHeads}).");
            if (HeadDim * NumHeads != HiddenSize)
                throw new InvalidDataException($"{source}: n_embd ({HiddenSize}) must be divisible by n_head ({NumHeads}).");
        }
        return this;
    }

    /// <summary>Reads and validates a Hugging Face <c>config.json</c>.</summary>
    /// <exception cref="FileNotFoundException">The file is missing.</exception>
    /// <exception cref="NotSupportedException">A field names an architecture or option we do not implement.</exception>
    public static TeacherConfig FromHuggingFaceJson(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Teacher config not found: {path}", path);
        return FromHuggingFaceJson(JsonFiles.ReadObject(path), path);
    }

    /// <summary>
    /// A token-id field (<c>eos_token_id</c>): one id or a list of them, null when absent or JSON null; any other JSON
    /// is named in one line ("file: field 'eos_token_id' must be a token id or a list of them, found …"). config.json
    /// and generation_config.json are read with it.
    /// </summary>
    internal static IReadOnlyList<int>? TokenIds(JsonObject root, string field, string source)
    {
        InvalidDataException WrongType(JsonNode node) => new($"{source}: field '{field}' must be a token id or a list of them, found {node.ToJsonString()}.");
        return root[field] switch
        {
            null => null,
            JsonArray a => a.Select(x => x is JsonValue v && v.TryGetValue<int>(out var i) ? i : throw WrongType(a)).ToArray(),
            JsonValue v when v.TryGetValue<int>(out var i) => [i],
            var node => throw WrongType(node),
        };
    }

    /// <summary>Parses a Hugging Face config object (see <see cref="FromHuggingFaceJson(string)"/>).</summary>
    public static TeacherConfig FromHuggingFaceJson(JsonObject root, string source)
    {
        // A value of another JSON type (64.0 for an integer, "1e-5" for a number) is named, not read as something else.
        InvalidDataException WrongType(string field, string expected, JsonNode node) =>
            new($"{source}: field '{field}' must be {expected}, found {node.ToJsonString()}.");
        string? OptionalString(string field) => root[field] switch
        {
            null => null,
            JsonValue v when v.TryGetValue<string>(out var s) => s,
            var node => throw WrongType(field, "a string", node),
        };
        string modelType = OptionalString("model_type") ?? throw new InvalidDataException($"{source}: field 'model_type' is missing.");
        int? OptionalInt(string field) => root[field] switch
        {
            null => null,
            JsonValue v when v.TryGetValue<int>(out var i) => i,
            var node => throw WrongType(field, "an integer", node),
        };
        int Int(string field, int? fallback = null) =>
            OptionalInt(field) ?? fallback ?? throw new InvalidDataException($"{source}: field '{field}' is missing.");
        double Double(string field, double fallback) => root[field] switch
        {
            null => fallback,
            JsonValue v when v.TryGetValue<double>(out var d) => d,
            var node => throw WrongType(field, "a number", node),
        };
        bool Bool(string field, bool fallback) => root[field] switch
        {
            null => fallback,
            JsonValue v when v.TryGetValue<bool>(out var b) => b,
            var node => throw WrongType(field, "true or false", node),
        };
        IReadOnlyList<int> Ids(string field) => TokenIds(root, field, source) ?? [];

        if (modelType == "gpt2")
        {
            int hidden = Int("n_embd"), heads = Int("n_head");
            int? inner = OptionalInt("n_inner");
            if (Bool("scale_attn_by_inverse_layer_idx", false))
                throw new NotSupportedException($"{source}: scale_attn_by_inverse_layer_idx=true is not supported.");
            if (!Bool("scale_attn_weights", true))
                throw new NotSupportedException($"{source}: scale_attn_weights=false is not supported.");
            return new TeacherConfig
            {
                ModelType = modelType, VocabSize = Int("vocab_size"), HiddenSize = hidden, IntermediateSize = inner ?? 4 * hidden,
                NumLayers = Int("n_layer"), NumHeads = heads, NumKeyValueHeads = heads, HeadDim = heads > 0 ? hidden / heads : 0,
                MaxPositions = Int("n_positions"), NormEpsilon = Double("layer_norm_epsilon", 1e-5),
                Activation = OptionalString("activation_function") ?? "gelu_new",
                TieWordEmbeddings = Bool("tie_word_embeddings", true), QkvBias = true, OutputProjectionBias = true, MlpBias = true,
                BosTokenId = OptionalInt("bos_token_id"), EosTokenIds = Ids("eos_token_id"), PadTokenId = OptionalInt("pad_token_id"),
            }.Validate(source);
        }

        int hiddenSize = Int("hidden_size"), numHeads = Int("num_attention_heads");
        string? scalingType = null; double factor = 1, low = 1, high = 4; int originalMax = 8192;
        if (root["rope_scaling"] is JsonObject rs)
        {
            // As Hugging Face's own validation: a scaling needs its type and every parameter of that type. A guessed
            // default would run another model than the one trained, with nothing to show for it.
            scalingType = (rs["rope_type"] ?? rs["type"]) is JsonValue tv && tv.TryGetValue<string>(out var t) ? t
                : throw new InvalidDataException($"{source}: rope_scaling {rs.ToJsonString()} has no 'rope_type' (or 'type').");
            double Required(string key) => rs[key] is JsonValue v && v.TryGetValue<double>(out var d) ? d
                : throw new InvalidDataException($"{source}: rope_scaling of type '{scalingType}' needs a number '{key}', found {rs[key]?.ToJsonString() ?? "none"}.");
            if (scalingType is "linear" or "llama3") factor = Required("factor");
            if (scalingType == "llama3")
            {
                low = Required("low_freq_factor");
                high = Required("high_freq_factor");
                // A position count: 8192.5 was truncated and 1e10 overflowed without a word.
                double original = Required("original_max_position_embeddings");
                originalMax = original >= 1 && original <= int.MaxValue && original == Math.Floor(original) ? (int)original
                    : throw new InvalidDataException($"{source}: rope_scaling of type 'llama3' needs a positive integer 'original_max_position_embeddings', found {rs["original_max_position_embeddings"]!.ToJsonString()}.");
            }
        }
        else if (root["rope_scaling"] is { } other)
            throw WrongType("rope_scaling", "an object or null", other);
        bool attentionBias = Bool("attention_bias", false);
        int? window = modelType is "mistral" or "qwen2" && Bool("use_sliding_window", modelType == "mistral") ? OptionalInt("sliding_window") : null;
        if (modelType == "qwen2" && window is not null)
        {
            // Qwen2 windows only the layers from max_window_layers on (Hugging Face's Qwen2Config defaults it to 28); this
            // teacher windows all layers or none, so a model that mixes both is refused rather than run differently.
            int layers = Int("num_hidden_layers"), fullLayers = Int("max_window_layers", 28);
            if (fullLayers >= layers) window = null;
            else if (fullLayers > 0)
                throw new NotSupportedException($"{source}: max_window_layers {fullLayers} windows layers {fullLayers}-{layers - 1} of {layers} and not the " +
                                                "others; mixing windowed and full-attention layers is not supported.");
        }
        return new TeacherConfig
        {
            ModelType = modelType, VocabSize = Int("vocab_size"), HiddenSize = hiddenSize, IntermediateSize = Int("intermediate_size"),
            NumLayers = Int("num_hidden_layers"), NumHeads = numHeads, NumKeyValueHeads = Int("num_key_value_heads", numHeads),
            HeadDim = OptionalInt("head_dim") ?? (numHeads > 0 ? hiddenSize / numHeads : 0),
            MaxPositions = Int("max_position_embeddings"), NormEpsilon = Double("rms_norm_eps", 1e-6),
            RopeTheta = Double("rope_theta", 10000), RopeScalingType = scalingType == "default" ? null : scalingType,
            RopeScalingFactor = factor, RopeLowFreqFactor = low, RopeHighFreqFactor = high, RopeOriginalMaxPositions = originalMax,
            QkvBias = modelType == "qwen2" || attentionBias, OutputProjectionBias = attentionBias, MlpBias = Bool("mlp_bias", false),
            SlidingWindow = window, TieWordEmbeddings = Bool("tie_word_embeddings", false),
            Activation = OptionalString("hidden_act") ?? "silu",
            BosTokenId = OptionalInt("bos_token_id"), EosTokenIds = Ids("eos_token_id"), PadTokenId = OptionalInt("pad_token_id"),
        }.Validate(source);
    }

    /// <summary>Writes this config as a Hugging Face <c>config.json</c> object that <see cref="FromHuggingFaceJson(string)"/> reads back.</summary>
    public JsonObject ToHuggingFaceJson()
    {
        JsonNode? Eos() => EosTokenIds.Count switch { 0 => null, 1 => EosTokenIds[0], _ => new JsonArray(EosTokenIds.Select(i => (JsonNode?)i).ToArray()) };
        if (Architecture == TeacherArchitecture.Gpt2)
        {
            return new JsonObject
            {
                ["architectures"] = new JsonArray("GPT2LMHeadModel"), ["model_type"] = "gpt2",
                ["vocab_size"] = VocabSize, ["n_embd"] = HiddenSize, ["n_inner"] = IntermediateSize, ["n_layer"] = NumLayers,
                ["n_head"] = NumHeads, ["n_positions"] = MaxPositions, ["n_ctx"] = MaxPositions, ["layer_norm_epsilon"] = NormEpsilon,
                ["activation_function"] = Activation, ["tie_word_embeddings"] = TieWordEmbeddings,
                ["bos_token_id"] = BosTokenId, ["eos_token_id"] = Eos(), ["pad_token_id"] = PadTokenId, ["torch_dtype"] = "float32",
            };
        }
        var o = new JsonObject
        {
            ["architectures"] = new JsonArray(ModelType switch { "mistral" => "MistralForCausalLM", "qwen2" => "Qwen2ForCausalLM", _ => "LlamaForCausalLM" }),
            ["model_type"] = ModelType, ["vocab_size"] = VocabSize, ["hidden_size"] = HiddenSize, ["intermediate_size"] = IntermediateSize,
            ["num_hidden_layers"] = NumLayers, ["num_attention_heads"] = NumHeads, ["num_key_value_heads"] = NumKeyValueHeads,
            ["head_dim"] = HeadDim, ["max_position_embeddings"] = MaxPositions, ["rms_norm_eps"] = NormEpsilon, ["rope_theta"] = RopeTheta,
            ["hidden_act"] = Activation, ["tie_word_embeddings"] = TieWordEmbeddings,
            ["attention_bias"] = ModelType == "qwen2" ? null : QkvBias, ["mlp_bias"] = MlpBias,
            ["bos_token_id"] = BosTokenId, ["eos_token_id"] = Eos(), ["pad_token_id"] = PadTokenId, ["torch_dtype"] = "float32",
        };
        if (ModelType == "qwen2") o.Remove("attention_bias");
        if (RopeScalingType is not null)
            o["rope_scaling"] = new JsonObject
            {
                ["rope_type"] = RopeScalingType, ["factor"] = RopeScalingFactor, ["low_freq_factor"] = RopeLowFreqFactor,
                ["high_freq_factor"] = RopeHighFreqFactor, ["original_max_position_embeddings"] = RopeOriginalMaxPositions,
            };
        // max_window_layers 0: Qwen2 windows every layer, as this teacher does (Mistral has no such field).
        if (SlidingWindow is int w) { o["sliding_window"] = w; o["use_sliding_window"] = true; if (ModelType == "qwen2") o["max_window_layers"] = 0; }
        return o;
    }

    /// <summary>A compact, culture-invariant description used in logs and errors.</summary>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{ModelType}: vocab {VocabSize}, hidden {HiddenSize}, layers {NumLayers}, heads {NumHeads}/{NumKeyValueHeads}, head_dim {HeadDim}, mlp {IntermediateSize}, ctx {MaxPositions}");
}
