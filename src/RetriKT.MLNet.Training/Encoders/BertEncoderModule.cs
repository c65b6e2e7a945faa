using RetriKT.MLNet.Common;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Encoders;

/// <summary>
/// A BERT encoder in TorchSharp whose parameter names are exactly Hugging Face <c>BertModel</c>'s
/// (<c>embeddings.word_embeddings.weight</c>, <c>encoder.layer.0.attention.self.query.weight</c>, ...), so weights
/// load by name. Post-LayerNorm blocks, exact (erf) GELU, additive attention mask. No dropout: the encoder is used
/// frozen or fine-tuned in a few top layers, where the pretrained weights are the regulariser.
/// </summary>
internal sealed class BertEncoderModule : nn.Module
{
    private readonly BertEmbeddings embeddings;
    private readonly BertStack encoder;
    private readonly BertDense? pooler;

    public BertEncoderModule(BertConfig config, bool withPooler) : base(nameof(BertEncoderModule))
    {
        Config = config.Validate();
        embeddings = new BertEmbeddings(config);
        encoder = new BertStack(config);
        pooler = withPooler ? new BertDense(config.HiddenSize, config.HiddenSize) : null;
        RegisterComponents();
    }

    public BertConfig Config { get; }

    /// <summary>Builds the module for <paramref name="weights"/> on <paramref name="device"/> and copies every weight in by name.</summary>
    public static BertEncoderModule Create(BertWeights weights, Device device)
    {
        var module = new BertEncoderModule(weights.Config, weights.HasPooler);
        try
        {
            using (var scope = NewDisposeScope())
            using (var noGrad = no_grad())
                foreach (var (name, parameter) in module.named_parameters())
                {
                    if (!weights.Tensors.TryGetValue(name, out var t))
                        throw new InvalidDataException($"{weights.Source}: tensor '{name}' is missing.");
                    parameter.copy_(tensor(t.Data, t.Shape));
                }
            // Outside the scope: the moved parameters belong to the module, not to a scope that would free them.
            module.to(device);
            module.eval();
            return module;
        }
        catch { module.Dispose(); throw; }
    }

    /// <summary>Last hidden states [B, T, H].</summary>
    /// <param name="inputIds">[B, T] token ids (int64).</param>
    /// <param name="attentionMask">[B, T]: 1 for real tokens, 0 for padding.</param>
    /// <param name="tokenTypeIds">[B, T] segment ids, or null for all zeros.</param>
    public Tensor Forward(Tensor inputIds, Tensor attentionMask, Tensor? tokenTypeIds = null)
        => encoder.Forward(embeddings.Forward(inputIds, tokenTypeIds), AdditiveMask(attentionMask));

    /// <summary>
    /// Hugging Face's extended attention mask [B, 1, 1, T] from a [B, T] mask (1 real, 0 padding): 0 where attended,
    /// float.MinValue at padding, broadcast over heads and queries. Held scalars, alpha included (see <see cref="HeldScalars"/>).
    /// </summary>
    public static Tensor AdditiveMask(Tensor attentionMask)
        => attentionMask.to(ScalarType.Float32).neg().add_(HeldScalars.One, HeldScalars.One).mul_(HeldScalars.FloatMin).unsqueeze(1).unsqueeze(1);

    /// <summary>BERT's pooler output, tanh(dense(h_[CLS])); only for checkpoints that have one.</summary>
    public Tensor Pool(Tensor lastHidden)
        => pooler is null ? throw new InvalidOperationException("This checkpoint has no pooler (pooler.dense.*).")
            : pooler.Forward(lastHidden[.., 0]).tanh();

    /// <summary>The top <paramref name="count"/> transformer layers' parameters (for partial fine-tuning).</summary>
    public IEnumerable<Parameter> TopLayerParameters(int count) => encoder.TopLayerParameters(count);
}

internal sealed class BertEmbeddings : nn.Module
{
    private readonly Embedding word_embeddings, position_embeddings, token_type_embeddings;
    private readonly LayerNorm LayerNorm;

    public BertEmbeddings(BertConfig c) : base(nameof(BertEmbeddings))
    {
        word_embeddings = nn.Embedding(c.VocabSize, c.HiddenSize);
        position_embeddings = nn.Embedding(c.MaxPositions, c.HiddenSize);
        token_type_embeddings = nn.Embedding(c.TypeVocabSize, c.HiddenSize);
        LayerNorm = nn.LayerNorm(c.HiddenSize, eps: c.LayerNormEpsilon);
        RegisterComponents();
    }

    public Tensor Forward(Tensor inputIds, Tensor? tokenTypeIds)
    {
        long t = inputIds.shape[1];
        var positions = HeldScalars.Arange(t, ScalarType.Int64, inputIds.device).unsqueeze(0);
        var types = tokenTypeIds ?? zeros_like(inputIds);
        return LayerNorm.forward(word_embeddings.forward(inputIds).add(position_embeddings.forward(positions), HeldScalars.One)
            .add(token_type_embeddings.forward(types), HeldScalars.One));
    }
}

/// <summary>A dense layer under HF's name <c>dense</c> (intermediate, pooler).</summary>
internal sealed class BertDense : nn.Module
{
    private readonly Linear dense;

    public BertDense(int input, int output) : base(nameof(BertDense))
    {
        dense = nn.Linear(input, output);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x) => dense.forward(x);
}

/// <summary>dense, then LayerNorm over the residual sum (HF's BertSelfOutput and BertOutput).</summary>
internal sealed class BertDenseNorm : nn.Module
{
    private readonly Linear dense;
    private readonly LayerNorm LayerNorm;

    public BertDenseNorm(int input, int output, double eps) : base(nameof(BertDenseNorm))
    {
        dense = nn.Linear(input, output);
        LayerNorm = nn.LayerNorm(output, eps: eps);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor residual) => LayerNorm.forward(dense.forward(x).add(residual, HeldScalars.One));
}

internal sealed class BertSelfAttention : nn.Module
{
    private readonly Linear query, key, value;
    private readonly int _heads, _headSize;
    private readonly Scalar _sqrtHeadSize; // held for the module's life (see HeldScalars)

    public BertSelfAttention(BertConfig c) : base(nameof(BertSelfAttention))
    {
        query = nn.Linear(c.HiddenSize, c.HiddenSize);
        key = nn.Linear(c.HiddenSize, c.HiddenSize);
        value = nn.Linear(c.HiddenSize, c.HiddenSize);
        _heads = c.NumHeads;
        _headSize = c.HiddenSize / c.NumHeads;
        _sqrtHeadSize = Math.Sqrt(_headSize).ToScalar();
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor maskBias)
    {
        long b = x.shape[0], t = x.shape[1], h = x.shape[2];
        Tensor Heads(Linear projection) => projection.forward(x).view(b, t, _heads, _headSize).transpose(1, 2);
        var scores = Heads(query).matmul(Heads(key).transpose(-2, -1)).div_(_sqrtHeadSize).add_(maskBias, HeldScalars.One);
        return scores.softmax(-1).matmul(Heads(value)).transpose(1, 2).reshape(b, t, h);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _sqrtHeadSize.Dispose();
        base.Dispose(disposing);
    }
}

internal sealed class BertAttention : nn.Module
{
    private readonly BertSelfAttention self;
    private readonly BertDenseNorm output;

    public BertAttention(BertConfig c) : base(nameof(BertAttention))
    {
        self = new BertSelfAttention(c);
        output = new BertDenseNorm(c.HiddenSize, c.HiddenSize, c.LayerNormEpsilon);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor maskBias) => output.Forward(self.Forward(x, maskBias), x);
}

internal sealed class BertLayer : nn.Module
{
    private readonly BertAttention attention;
    private readonly BertDense intermediate;
    private readonly BertDenseNorm output;

    public BertLayer(BertConfig c) : base(nameof(BertLayer))
    {
        attention = new BertAttention(c);
        intermediate = new BertDense(c.HiddenSize, c.IntermediateSize);
        output = new BertDenseNorm(c.IntermediateSize, c.HiddenSize, c.LayerNormEpsilon);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor maskBias)
    {
        var a = attention.Forward(x, maskBias);
        return output.Forward(nn.functional.gelu(intermediate.Forward(a)), a);
    }
}

internal sealed class BertStack : nn.Module
{
    private readonly ModuleList<BertLayer> layer;

    public BertStack(BertConfig c) : base(nameof(BertStack))
    {
        layer = nn.ModuleList(Enumerable.Range(0, c.NumLayers).Select(_ => new BertLayer(c)).ToArray());
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor maskBias)
    {
        foreach (var l in layer) x = l.Forward(x, maskBias);
        return x;
    }

    public IEnumerable<Parameter> TopLayerParameters(int count)
        => layer.Skip(Math.Max(0, layer.Count - count)).SelectMany(l => l.parameters());
}
