using System.Text.Json;
using System.Text.Json.Nodes;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Encoders;

/// <summary>
/// Shape of a BERT-family encoder (BERT, MiniLM, arctic-embed, bge, e5 ...): post-LayerNorm blocks, absolute
/// positions, exact (erf) GELU. Defaults are all-MiniLM-L6-v2's.
/// </summary>
public sealed record BertConfig
{
    /// <summary>WordPiece vocabulary size. Default 30,522 (bert-base-uncased).</summary>
    public int VocabSize { get; init; } = 30522;
    /// <summary>Hidden size. Default 384.</summary>
    public int HiddenSize { get; init; } = 384;
    /// <summary>Transformer layers. Default 6.</summary>
    public int NumLayers { get; init; } = 6;
    /// <summary>Attention heads (must divide <see cref="HiddenSize"/>). Default 12.</summary>
    public int NumHeads { get; init; } = 12;
    /// <summary>Feed-forward size. Default 1536.</summary>
    public int IntermediateSize { get; init; } = 1536;
    /// <summary>Position embeddings, i.e. the longest input in tokens. Default 512.</summary>
    public int MaxPositions { get; init; } = 512;
    /// <summary>Segment (token type) embeddings. Default 2.</summary>
    public int TypeVocabSize { get; init; } = 2;
    /// <summary>LayerNorm epsilon. Default 1e-12 (BERT's).</summary>
    public double LayerNormEpsilon { get; init; } = 1e-12;

    /// <summary>
    /// The integer shape fields in one fixed order (vocabulary, hidden, layers, heads, feed-forward, positions, segment
    /// types): what a saved component's header holds and a fingerprint hashes, read back by <see cref="FromShape"/>.
    /// </summary>
    internal int[] Shape() => [VocabSize, HiddenSize, NumLayers, NumHeads, IntermediateSize, MaxPositions, TypeVocabSize];

    /// <summary>The config whose <see cref="Shape"/> is <paramref name="shape"/>, with <paramref name="layerNormEpsilon"/>.</summary>
    internal static BertConfig FromShape(IReadOnlyList<int> shape, double layerNormEpsilon) => new()
    {
        VocabSize = shape[0], HiddenSize = shape[1], NumLayers = shape[2], NumHeads = shape[3],
        IntermediateSize = shape[4], MaxPositions = shape[5], TypeVocabSize = shape[6], LayerNormEpsilon = layerNormEpsilon,
    };

    /// <summary>Checks the shape; <paramref name="source"/> names the config in errors.</summary>
    public BertConfig Validate(string source = "BERT config")
    {
        void Positive(int value, string name) { if (value <= 0) throw new InvalidDataException($"{source}: {name} must be positive, found {value}."); }
        Positive(VocabSize, "vocab_size"); Positive(HiddenSize, "hidden_size"); Positive(NumLayers, "num_hidden_layers");
        Positive(NumHeads, "num_attention_heads"); Positive(IntermediateSize, "intermediate_size");
        Positive(MaxPositions, "max_position_embeddings"); Positive(TypeVocabSize, "type_vocab_size");
        if (HiddenSize % NumHeads != 0)
            throw new InvalidDataException($"{source}: hidden_size {HiddenSize} is not a multiple of num_attention_heads {NumHeads}.");
        if (!(LayerNormEpsilon > 0)) throw new InvalidDataException($"{source}: layer_norm_eps must be positive, found {LayerNormEpsilon}.");
        return this;
    }

    /// <summary>
    /// Reads a Hugging Face <c>config.json</c> of a BERT-family model. Anything this encoder does not compute
    /// (a <c>model_type</c> other than bert, relative positions, an activation other than exact GELU) fails with the
    /// field and value found.
    /// </summary>
    public static BertConfig FromHuggingFaceJson(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"BERT config not found: {path}", path);
        var root = JsonFiles.ReadObject(path);
        // A field of the wrong type (a quoted number, 32.0) fails naming the file and field; GetValue's bare
        // InvalidOperationException named neither, and a non-string model_type was taken for an absent one.
        InvalidDataException WrongType(string field, string expected) =>
            new($"{path}: field '{field}': expected {expected}, found {root[field]!.ToJsonString()}.");
        int? OptionalInt(string field) => root[field] switch
        {
            null => null,
            JsonValue v when v.TryGetValue<int>(out var n) => n,
            _ => throw WrongType(field, "an integer"),
        };
        int Int(string field) => OptionalInt(field) ?? throw new InvalidDataException($"{path}: field '{field}' is missing.");
        string? Text(string field) => root[field] switch
        {
            null => null,
            JsonValue v when v.TryGetValue<string>(out var s) => s,
            _ => throw WrongType(field, "a string"),
        };
        double? OptionalDouble(string field) => root[field] switch
        {
            null => null,
            JsonValue v when v.TryGetValue<double>(out var d) => d,
            _ => throw WrongType(field, "a number"),
        };

        // Another architecture can share BERT's tensor names and shapes (RoBERTa offsets its positions by 2, DistilBERT
        // has no segments, ELECTRA may project its embeddings); loading it as BERT would compute something else.
        if (Text("model_type") is { } type && type != "bert")
            throw new NotSupportedException($"{path}: model_type '{type}' is not supported; expected 'bert'.");
        if (Text("hidden_act") is { } act && act != "gelu")
            throw new NotSupportedException($"{path}: hidden_act '{act}' is not supported; expected 'gelu' (exact erf form).");
        if (Text("position_embedding_type") is { } pos && pos != "absolute")
            throw new NotSupportedException($"{path}: position_embedding_type '{pos}' is not supported; expected 'absolute'.");
        return new BertConfig
        {
            VocabSize = Int("vocab_size"), HiddenSize = Int("hidden_size"), NumLayers = Int("num_hidden_layers"),
            NumHeads = Int("num_attention_heads"), IntermediateSize = Int("intermediate_size"),
            MaxPositions = Int("max_position_embeddings"), TypeVocabSize = OptionalInt("type_vocab_size") ?? 2,
            LayerNormEpsilon = OptionalDouble("layer_norm_eps") ?? 1e-12,
        }.Validate(path);
    }
}
