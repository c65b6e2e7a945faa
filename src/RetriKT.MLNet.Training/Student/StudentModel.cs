using RetriKT.MLNet.Common;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Student;

/// <summary>
/// Dropout drawing its mask from a private generator, so training is repeatable even while other threads use
/// TorchSharp's global RNG, on every device: the mask is drawn on the CPU and moved to the tensor's device, since
/// TorchSharp 0.107 makes every Generator on the CPU (its native constructor ignores the device it is given).
/// </summary>
internal sealed class SeededDropout(double p)
{
    // p and the kept share 1 − p, held for the object's life (see HeldScalars).
    private readonly Scalar _dropShare = p.ToScalar(), _keepShare = (1 - p).ToScalar();

    public Generator? Generator { get; set; }

    public Tensor Apply(Tensor x, bool training)
    {
        if (!training || p <= 0) return x;
        if (Generator is null) return nn.functional.dropout(x, p, training: true);
        var keep = torch.rand(x.shape, dtype: x.dtype, device: CPU, generator: Generator).ge_(_dropShare);
        if (x.device.type != DeviceType.CPU) keep = keep.to(x.device);
        return x * keep / _keepShare;
    }
}

/// <summary>Pre-LayerNorm transformer block: x + attn(ln(x)); x + mlp(ln(x)). GELU (tanh form) in the MLP.</summary>
internal sealed class StudentBlock : nn.Module
{
    private readonly LayerNorm ln_1, ln_2;
    private readonly Linear attn_qkv, attn_proj, mlp_fc, mlp_proj;
    private readonly int _heads, _headSize;
    private readonly Scalar _scoreScale; // 1/√headSize, held for the module's life (see HeldScalars)
    private readonly SeededDropout _dropout;

    public StudentBlock(StudentConfig config, SeededDropout dropout) : base(nameof(StudentBlock))
    {
        int h = config.HiddenSize;
        ln_1 = nn.LayerNorm(h, eps: 1e-5);
        attn_qkv = nn.Linear(h, 3 * h);
        attn_proj = nn.Linear(h, h);
        ln_2 = nn.LayerNorm(h, eps: 1e-5);
        mlp_fc = nn.Linear(h, config.FeedForwardSize);
        mlp_proj = nn.Linear(config.FeedForwardSize, h);
        _heads = config.Heads;
        _headSize = config.HeadSize;
        _scoreScale = (1.0 / Math.Sqrt(_headSize)).ToScalar();
        _dropout = dropout;
        RegisterComponents();
    }

    /// <param name="x">[B, T, H] states.</param>
    /// <param name="attentionBias">[B, 1, 1, T]: 0 for real tokens, a large negative value for padding.</param>
    public Tensor Forward(Tensor x, Tensor attentionBias)
    {
        long b = x.shape[0], t = x.shape[1], h = x.shape[2];
        var qkv = attn_qkv.forward(ln_1.forward(x)).view(b, t, 3, _heads, _headSize).permute(2, 0, 3, 1, 4); // [3,B,nh,T,hs]
        var q = qkv[0];
        var k = qkv[1];
        var v = qkv[2];
        var scores = q.matmul(k.transpose(-2, -1)).mul_(_scoreScale).add_(attentionBias, HeldScalars.One);
        var weights = _dropout.Apply(scores.softmax(-1), training);
        var y = weights.matmul(v).transpose(1, 2).reshape(b, t, h);
        x = x.add(_dropout.Apply(attn_proj.forward(y), training), HeldScalars.One);
        var m = mlp_proj.forward(nn.functional.gelu(mlp_fc.forward(ln_2.forward(x)), GELU.Approximate.tanh));
        return x.add(_dropout.Apply(m, training), HeldScalars.One);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _scoreScale.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary>
/// The student: token + position + segment embeddings, pre-LN transformer blocks, final LayerNorm, pooling, and a
/// linear classification head. <see cref="Encode"/> gives the pooled embedding (retrieval uses its L2-normalised
/// form); <see cref="Head"/> gives label logits. <c>log_temperature</c> is the learned retrieval temperature τ.
/// </summary>
internal sealed class StudentModel : nn.Module
{
    private readonly Embedding wte, wpe, wse;
    private readonly Linear? wte_proj; // factored token embeddings (Config.EmbeddingRank > 0): wte is [V, r], this maps r → H
    private readonly ModuleList<StudentBlock> h;
    private readonly LayerNorm ln_f;
    private readonly Linear head;
    private readonly Parameter log_temperature;
    private readonly SeededDropout _dropout;

    public StudentModel(StudentConfig config, double initialTemperature) : base(nameof(StudentModel))
    {
        config.Validate();
        Config = config;
        _dropout = new SeededDropout(config.Dropout);
        wte = nn.Embedding(config.VocabularySize, config.EmbeddingRank > 0 ? config.EmbeddingRank : config.HiddenSize);
        wte_proj = config.EmbeddingRank > 0 ? nn.Linear(config.EmbeddingRank, config.HiddenSize, hasBias: false) : null;
        wpe = nn.Embedding(config.MaxLength, config.HiddenSize);
        wse = nn.Embedding(2, config.HiddenSize);
        h = nn.ModuleList(Enumerable.Range(0, config.Layers).Select(_ => new StudentBlock(config, _dropout)).ToArray());
        ln_f = nn.LayerNorm(config.HiddenSize, eps: 1e-5);
        head = nn.Linear(config.HiddenSize, config.LabelCount);
        log_temperature = nn.Parameter(torch.tensor(new[] { (float)Math.Log(initialTemperature) })); // named StudentWeights.TemperatureName
        RegisterComponents();
    }

    public StudentConfig Config { get; }

    /// <summary>Generator used by dropout while training (null: global RNG).</summary>
    public Generator? DropoutGenerator { get => _dropout.Generator; set => _dropout.Generator = value; }

    /// <summary>Deterministic initialisation from <paramref name="generator"/>: N(0, 0.02) weights, zero biases, unit LayerNorm.</summary>
    public void Initialize(Generator generator)
    {
        // A scope: normal_ returns a handle of its own (one per weight matrix), which was left to the finalizer at every Fit.
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name == nameof(log_temperature)) continue;
            if (name.Contains("ln_")) { if (name.EndsWith("weight", StringComparison.Ordinal)) p.fill_(1); else p.zero_(); }
            else if (name.EndsWith("bias", StringComparison.Ordinal)) p.zero_();
            else p.normal_(0, 0.02, generator);
        }
    }

    /// <summary>
    /// Starts the token embeddings from <paramref name="vectors"/> ([V, d] row-major, one per vocabulary token): with
    /// factored embeddings (rank r) their best rank-r approximation (truncated SVD: the factors are U·S, the projection
    /// has orthonormal columns drawn from <paramref name="generator"/>, so the student's token vectors keep the given
    /// geometry); otherwise d must be the hidden size and they are copied. Either way the rows are rescaled to the mean
    /// norm of the N(0, 0.02) initialisation, and the position and segment embeddings start at zero.
    /// </summary>
    public void InitializeTokenEmbeddings(float[] vectors, int width, Generator generator, string source)
    {
        int v = Config.VocabularySize, hidden = Config.HiddenSize, rank = Config.EmbeddingRank;
        if (vectors.Length != (long)v * width)
            throw new InvalidDataException($"{source}: expected {v} token vectors (one per vocabulary token) of width {width}, found {vectors.Length} values.");
        if (rank == 0 && width != hidden)
            throw new InvalidDataException($"{source}: token vectors have width {width}, the student's hidden size is {hidden}; set EmbeddingRank to factor them.");
        if (rank > Math.Min(v, width))
            throw new ArgumentOutOfRangeException(nameof(Config.EmbeddingRank), $"EmbeddingRank {rank} exceeds what {source}'s [{v}, {width}] vectors hold (at most {Math.Min(v, width)}).");
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var given = torch.tensor(vectors, [v, width]);
        Tensor table;
        if (rank > 0)
        {
            var (u, singular, _) = torch.linalg.svd(given, fullMatrices: false);
            table = u.narrow(1, 0, rank).mul(singular.narrow(0, 0, rank).unsqueeze(0));
            var (q, _) = torch.linalg.qr(torch.randn([hidden, rank], generator: generator));
            wte_proj!.weight!.copy_(q);
        }
        else table = given;
        var scale = 0.02 * Math.Sqrt(hidden) / table.norm(1).mean().item<float>();
        wte.weight!.copy_(table.mul(scale));
        // Random position and segment vectors as large as the token vectors would bury the given geometry under noise
        // that depends on the sentence's length; they start at zero and grow only as far as the data asks.
        wpe.weight!.zero_();
        wse.weight!.zero_();
    }

    /// <summary>Retrieval temperature τ = exp(log_temperature), clamped to [0.01, 2].</summary>
    public Tensor Temperature() => Temperature(log_temperature);

    public double TemperatureValue => TemperatureValueOf(log_temperature);

    /// <summary>τ = exp(<paramref name="logTemperature"/>) clamped to [0.01, 2]: this student's, and a backbone head's alike.</summary>
    internal static Tensor Temperature(Tensor logTemperature) => logTemperature.exp().clamp(HeldScalars.MinTemperature, HeldScalars.MaxTemperature);

    /// <summary>τ of <paramref name="logTemperature"/> as a number (each epoch's report reads it).</summary>
    internal static double TemperatureValueOf(Tensor logTemperature)
    {
        // A scope, not a using on the last tensor: exp() makes a handle of its own, which was left to the finalizer at
        // every epoch's report.
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        return Temperature(logTemperature).item<float>();
    }

    /// <param name="ids">[B, T] int64 token ids (padding anywhere after [SEP]).</param>
    /// <param name="segments">[B, T] int64 segment ids (0 first text, 1 second text).</param>
    /// <param name="mask">[B, T] float32, 1 for real tokens, 0 for padding.</param>
    /// <returns>[B, H] pooled embedding (not normalised).</returns>
    public Tensor Encode(Tensor ids, Tensor segments, Tensor mask)
    {
        long t = ids.shape[1];
        var positions = HeldScalars.Arange(t, ScalarType.Int64, ids.device);
        var tokens = wte_proj is null ? wte.forward(ids) : wte_proj.forward(wte.forward(ids));
        var x = tokens.add(wpe.forward(positions).unsqueeze(0), HeldScalars.One).add(wse.forward(segments), HeldScalars.One);
        x = _dropout.Apply(x, training);
        // 1 − mask as TorchSharp's operator computes it (−mask + 1), then the padding bias.
        var bias = mask.negative().add(HeldScalars.One, HeldScalars.One).mul_(HeldScalars.MinusOneBillion).view(mask.shape[0], 1, 1, t);
        foreach (var block in h) x = block.Forward(x, bias);
        x = ln_f.forward(x);
        if (Config.Pooling == StudentPooling.Cls) return x.select(1, 0);
        var m = mask.unsqueeze(-1);
        return (x * m).sum(1) / m.sum(1).clamp_min(HeldScalars.One);
    }

    /// <summary>[B, K] label logits from pooled embeddings.</summary>
    public Tensor Head(Tensor pooled) => head.forward(_dropout.Apply(pooled, training));

    /// <summary>Number of scalar parameters actually held (checked against <see cref="StudentConfig.ParameterCount"/> in tests).</summary>
    public long CountParameters() => parameters().Sum(p => p.numel());

    /// <summary>
    /// The network's state for the runtime (<see cref="StudentWeights"/>, managed memory): every state-dictionary entry
    /// but τ in order, as float32 on the CPU. Written to model.zip it is byte-identical to TorchSharp's <c>save</c>
    /// skipping τ. τ is left out because the runtime keeps it once, as a number that tuning may have changed.
    /// </summary>
    public StudentWeights ToWeights()
    {
        using var _ = torch.no_grad();
        var tensors = new List<NamedTensor>();
        foreach (var (name, t) in state_dict())
        {
            if (name == StudentWeights.TemperatureName) continue;
            tensors.Add(ToNamed(name, t));
        }
        return new StudentWeights(tensors);
    }

    /// <summary><paramref name="t"/>'s values as Float32 on the CPU, named (a student's weights, this one's or a backbone head's).</summary>
    internal static NamedTensor ToNamed(string name, Tensor t)
    {
        // A scope, not a using on the last tensor: detach() and to() make handles of their own.
        using var scope = torch.NewDisposeScope();
        var cpu = t.detach().to(ScalarType.Float32, torch.CPU).contiguous();
        return new NamedTensor(name, cpu.shape.ToArray(), cpu.data<float>().ToArray());
    }

    /// <summary>
    /// The network of a trained student (<see cref="RetrievalModel"/>: shape, weights and the τ it predicts with), on
    /// <paramref name="device"/>, in eval mode.
    /// </summary>
    public static StudentModel FromRuntime(RetrievalModel runtime, Device device)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        if (runtime.Backbone is { } backbone)
            throw new NotSupportedException($"The student is built on a pretrained backbone ({backbone.Description}); only the tiny student's network can be rebuilt in TorchSharp.");
        var model = new StudentModel(runtime.Config, runtime.Temperature);
        try
        {
            // The state dictionary holds τ too: load it from the runtime's number, so the strict load still checks every other entry.
            var temperature = new NamedTensor(StudentWeights.TemperatureName, [1], [(float)Math.Log(runtime.Temperature)]);
            var state = new StudentWeights([.. runtime.Weights.Without(StudentWeights.TemperatureName).Tensors, temperature]);
            using (var reader = new BinaryReader(new MemoryStream(state.ToBytes()))) model.load(reader);
            model.to(device);
            model.eval();
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
