using RetriKT.MLNet.Common;
using RetriKT.MLNet.Encoders;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Student;

/// <summary>
/// What a student on a pretrained backbone trains: optionally the backbone's top layers (<c>layer.i</c>, Hugging Face
/// <c>BertLayer</c>s loaded from the checkpoint), then a projection of the unit-length pooled embedding, initialised to
/// the identity (retrieval starts from the encoder's own similarity and moves only where the retrieval loss asks), a
/// linear head and the retrieval temperature τ. The runtime's <see cref="BackboneStudentNetwork"/> over the
/// (updated) backbone is the same computation. Inputs are cached: the backbone's embedding when it is frozen, the
/// token states entering the first trainable layer otherwise, so the frozen part runs once per text.
/// </summary>
internal sealed class BackboneHeadModel : nn.Module
{
    private readonly ModuleList<BertLayer> layer;
    private readonly Linear proj, head;
    private readonly Parameter log_temperature;
    private readonly SeededDropout _dropout;
    private readonly BertPooling _pooling;

    public BackboneHeadModel(int dimension, int labels, double dropout, double initialTemperature, BertConfig? config = null, int trainableLayers = 0,
        BertPooling pooling = BertPooling.Mean) : base(nameof(BackboneHeadModel))
    {
        if (trainableLayers > 0 && config is null) throw new ArgumentException("Trainable backbone layers need the backbone's config.", nameof(config));
        _dropout = new SeededDropout(dropout);
        _pooling = pooling;
        layer = nn.ModuleList(Enumerable.Range(0, trainableLayers).Select(_ => new BertLayer(config!)).ToArray());
        proj = nn.Linear(dimension, dimension);
        head = nn.Linear(dimension, labels);
        log_temperature = nn.Parameter(torch.tensor(new[] { (float)Math.Log(initialTemperature) })); // named StudentWeights.TemperatureName
        RegisterComponents();
    }

    /// <summary>Backbone layers this model trains (0: the backbone is frozen and the inputs are its embeddings).</summary>
    public int TrainableLayers => layer.Count;

    /// <summary>Generator used by dropout while training (null: global RNG).</summary>
    public Generator? DropoutGenerator { get => _dropout.Generator; set => _dropout.Generator = value; }

    /// <summary>Parameters of the trainable backbone layers (trained at their own, smaller learning rate).</summary>
    public IEnumerable<Parameter> LayerParameters => layer.parameters();

    /// <summary>Projection = identity, zero biases, head N(0, 0.02) from <paramref name="generator"/>; trainable layers from <paramref name="backbone"/>.</summary>
    public void Initialize(Generator generator, BertWeights? backbone = null)
    {
        // A scope: normal_ and copy_ return handles of their own, which were left to the finalizer at every Fit.
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        using (var eye = torch.eye(proj.weight!.shape[0])) proj.weight.copy_(eye);
        proj.bias!.zero_();
        head.weight!.normal_(0, 0.02, generator);
        head.bias!.zero_();
        foreach (var (name, parameter) in LayerNamedParameters())
        {
            var (shape, data) = backbone!.Tensors[BackboneName(name, backbone.Config.NumLayers)];
            using var value = torch.tensor(data, shape);
            parameter.copy_(value);
        }
    }

    /// <summary>The trainable layers' parameters under this model's names (<c>layer.i.*</c>).</summary>
    private IEnumerable<(string Name, Parameter Parameter)> LayerNamedParameters()
        => named_parameters().Where(p => p.name.StartsWith("layer.", StringComparison.Ordinal)).Select(p => (p.name, p.parameter));

    /// <summary>The checkpoint's name of this model's <c>layer.i.*</c> parameter: <c>encoder.layer.(L − N + i).*</c>.</summary>
    private string BackboneName(string name, int backboneLayers)
    {
        var parts = name.Split('.', 3); // "layer", i, rest
        return $"encoder.layer.{backboneLayers - layer.Count + int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture)}.{parts[2]}";
    }

    /// <summary>Retrieval temperature τ = exp(log_temperature), clamped to [0.01, 2] (as the tiny student's).</summary>
    public Tensor Temperature() => StudentModel.Temperature(log_temperature);

    public double TemperatureValue => StudentModel.TemperatureValueOf(log_temperature);

    /// <summary>[B, D] pooled embedding (not normalised) from [B, D] unit-length backbone embeddings.</summary>
    public Tensor Encode(Tensor features) => proj.forward(_dropout.Apply(features, training));

    /// <summary>
    /// [B, D] pooled embedding from [B, T, H] token states entering the first trainable layer and the [B, T] mask (1
    /// real, 0 padding): the trainable layers, the backbone's pooling, unit norm, then <see cref="Encode(Tensor)"/>.
    /// </summary>
    public Tensor Encode(Tensor states, Tensor mask)
    {
        var bias = BertEncoderModule.AdditiveMask(mask);
        foreach (var l in layer) states = l.Forward(states, bias);
        var pooled = _pooling == BertPooling.Cls ? states[.., 0] : BertSentenceEncoder.Pool(states, mask, BertPooling.Mean);
        return Encode(nn.functional.normalize(pooled, p: 2, dim: 1));
    }

    /// <summary>[B, K] label logits from pooled embeddings.</summary>
    public Tensor Head(Tensor pooled) => head.forward(_dropout.Apply(pooled, training));

    /// <summary>The trained projection and head for the runtime (every state entry but τ and the backbone layers, float32 on the CPU).</summary>
    public StudentWeights ToWeights()
    {
        using var _ = torch.no_grad();
        var tensors = new List<NamedTensor>();
        foreach (var (name, t) in state_dict())
        {
            if (name == StudentWeights.TemperatureName || name.StartsWith("layer.", StringComparison.Ordinal)) continue;
            tensors.Add(StudentModel.ToNamed(name, t));
        }
        return new StudentWeights(tensors);
    }

    /// <summary><paramref name="backbone"/> with its top layers replaced by the trained ones (the same instance when none train).</summary>
    public BertWeights UpdatedBackbone(BertWeights backbone)
    {
        if (layer.Count == 0) return backbone;
        using var _ = torch.no_grad();
        var tensors = new Dictionary<string, (long[] Shape, float[] Data)>(backbone.Tensors, StringComparer.Ordinal);
        foreach (var (name, t) in LayerNamedParameters())
        {
            var named = StudentModel.ToNamed(name, t);
            tensors[BackboneName(name, backbone.Config.NumLayers)] = (named.Shape, named.Values);
        }
        return BertWeights.FromTensors(backbone.Config, tensors, backbone.Source);
    }
}
