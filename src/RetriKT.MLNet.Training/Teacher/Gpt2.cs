using RetriKT.MLNet.Common;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace RetriKT.MLNet.Teacher;

// GPT-2 decoder laid out like HF GPT2LMHeadModel: transformer.{wte, wpe, h.N.{ln_1, attn.{c_attn, c_proj}, ln_2,
// mlp.{c_fc, c_proj}}, ln_f}; the LM head is tied to wte. Projections are HF "Conv1D": weight stored [in, out], y = x·W + b.

/// <summary>HF Conv1D: a linear layer whose weight is stored transposed, [in, out].</summary>
internal sealed class Conv1D : Module<Tensor, Tensor>
{
    private readonly Parameter weight, bias;

    public Conv1D(long inFeatures, long outFeatures, ScalarType dtype, Device device) : base(nameof(Conv1D))
    {
        weight = Parameter(zeros(inFeatures, outFeatures, dtype, device));
        bias = Parameter(zeros(outFeatures, dtype, device));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => x.matmul(weight).add(bias, HeldScalars.One);
}

/// <summary>Causal self-attention with the fused q|k|v projection.</summary>
internal sealed class Gpt2Attention : Module
{
    private readonly Conv1D c_attn, c_proj;
    private readonly int _heads, _headDim, _layer;
    private readonly long _hidden;

    public Gpt2Attention(TeacherConfig c, int layer, ScalarType dtype, Device device) : base(nameof(Gpt2Attention))
    {
        _heads = c.NumHeads; _headDim = c.HeadDim; _hidden = c.HiddenSize; _layer = layer;
        c_attn = new Conv1D(c.HiddenSize, 3 * c.HiddenSize, dtype, device);
        c_proj = new Conv1D(c.HiddenSize, c.HiddenSize, dtype, device);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor? bias, KvCache? cache)
    {
        long b = x.shape[0], t = x.shape[1];
        var qkv = c_attn.forward(x).split(_hidden, 2);
        var q = qkv[0].view(b, t, _heads, _headDim).transpose(1, 2);
        var k = qkv[1].view(b, t, _heads, _headDim).transpose(1, 2);
        var v = qkv[2].view(b, t, _heads, _headDim).transpose(1, 2);
        if (cache is not null) (k, v) = cache.Append(_layer, k, v);
        // A decoding step (one new position) attends over the cache in place (see Attention.SingleQuery).
        if (cache is not null && t == 1) return c_proj.forward(Attention.SingleQuery(q, k, v, bias));
        var y = functional.scaled_dot_product_attention(q, k, v, bias, 0.0, is_casual: bias is null && t > 1);
        return c_proj.forward(y.transpose(1, 2).reshape(b, t, _hidden));
    }
}

/// <summary>GELU feed-forward: c_proj(gelu(c_fc(x))), gelu_new = tanh approximation.</summary>
internal sealed class Gpt2Mlp : Module<Tensor, Tensor>
{
    private readonly Conv1D c_fc, c_proj;
    private readonly bool _tanh;

    public Gpt2Mlp(TeacherConfig c, ScalarType dtype, Device device) : base(nameof(Gpt2Mlp))
    {
        c_fc = new Conv1D(c.HiddenSize, c.IntermediateSize, dtype, device);
        c_proj = new Conv1D(c.IntermediateSize, c.HiddenSize, dtype, device);
        _tanh = c.Activation != "gelu";
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var h = c_fc.forward(x);
        return c_proj.forward(_tanh ? GeluTanh(h) : functional.gelu(h));
    }

    // HF gelu_new: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
    private static Tensor GeluTanh(Tensor x) =>
        x.mul(HeldScalars.Half).mul(x.pow(HeldScalars.Three).mul(HeldScalars.GeluCubicCoefficient).add(x, HeldScalars.One)
            .mul(HeldScalars.SqrtTwoOverPi).tanh().add(HeldScalars.OneDouble, HeldScalars.One));
}

/// <summary>Pre-LayerNorm GPT-2 block.</summary>
internal sealed class Gpt2Block : Module
{
    private readonly LayerNorm ln_1, ln_2;
    private readonly Gpt2Attention attn;
    private readonly Gpt2Mlp mlp;

    public Gpt2Block(TeacherConfig c, int layer, ScalarType dtype, Device device) : base(nameof(Gpt2Block))
    {
        ln_1 = LayerNorm(c.HiddenSize, c.NormEpsilon, device: device, dtype: dtype);
        attn = new Gpt2Attention(c, layer, dtype, device);
        ln_2 = LayerNorm(c.HiddenSize, c.NormEpsilon, device: device, dtype: dtype);
        mlp = new Gpt2Mlp(c, dtype, device);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor? bias, KvCache? cache, ResidualDrop dropout)
    {
        x = x.add(dropout.Apply(attn.Forward(ln_1.forward(x), bias, cache)), HeldScalars.One);
        return x.add(dropout.Apply(mlp.forward(ln_2.forward(x))), HeldScalars.One);
    }
}

/// <summary>Embeddings + blocks + final LayerNorm (HF "transformer.").</summary>
internal sealed class Gpt2Backbone : Module
{
    internal readonly Embedding wte, wpe;
    internal readonly ModuleList<Gpt2Block> h;
    internal readonly LayerNorm ln_f;

    public Gpt2Backbone(TeacherConfig c, ScalarType dtype, Device device) : base(nameof(Gpt2Backbone))
    {
        wte = Embedding(c.VocabSize, c.HiddenSize, device: device, dtype: dtype);
        wpe = Embedding(c.MaxPositions, c.HiddenSize, device: device, dtype: dtype);
        h = new ModuleList<Gpt2Block>(Enumerable.Range(0, c.NumLayers).Select(i => new Gpt2Block(c, i, dtype, device)).ToArray());
        ln_f = LayerNorm(c.HiddenSize, c.NormEpsilon, device: device, dtype: dtype);
        RegisterComponents();
    }
}

/// <summary>GPT-2 causal LM (HF GPT2LMHeadModel layout, tied head).</summary>
internal sealed class Gpt2LMHeadModel : CausalLMModule
{
    private readonly Gpt2Backbone transformer;
    private readonly Linear? lm_head;

    public Gpt2LMHeadModel(TeacherConfig c, ScalarType dtype, Device device) : base(nameof(Gpt2LMHeadModel), c)
    {
        transformer = new Gpt2Backbone(c, dtype, device);
        register_module("transformer", transformer);
        if (!c.TieWordEmbeddings)
        {
            lm_head = Linear(c.HiddenSize, c.VocabSize, hasBias: false, device, dtype);
            register_module("lm_head", lm_head);
        }
    }

    public override Tensor EmbedTokens(Tensor ids) => transformer.wte.forward(ids);

    public override Tensor Decode(Tensor embeds, Tensor positions, Tensor? attentionBias, KvCache? cache)
    {
        var dropout = ActiveDropout;
        var x = dropout.Apply(embeds.add(transformer.wpe.forward(positions), HeldScalars.One));
        foreach (var block in transformer.h) x = block.Forward(x, attentionBias, cache, dropout);
        return transformer.ln_f.forward(x);
    }

    public override Tensor LmHead(Tensor hidden) =>
        lm_head is null ? functional.linear(hidden, transformer.wte.weight!) : lm_head.forward(hidden);

    // Original OpenAI-converted checkpoints store names without "transformer." and carry causal-mask buffers.
    public override bool IsIgnorableCheckpointKey(string name) =>
        base.IsIgnorableCheckpointKey(name) || name.EndsWith(".attn.bias", StringComparison.Ordinal) || name.EndsWith(".attn.masked_bias", StringComparison.Ordinal);

    public override string CanonicalName(string checkpointKey) =>
        checkpointKey.StartsWith("transformer.", StringComparison.Ordinal) || checkpointKey.StartsWith("lm_head.", StringComparison.Ordinal)
            ? checkpointKey : "transformer." + checkpointKey;

    public override void InitializeWeights(Generator generator)
    {
        using var _ = no_grad();
        double residualStd = 0.02 / Math.Sqrt(2 * Config.NumLayers);
        foreach (var (name, p) in named_parameters())
        {
            bool norm = name.Contains(".ln_", StringComparison.Ordinal) || name.StartsWith("transformer.ln_f", StringComparison.Ordinal);
            if (norm) { if (name.EndsWith(".weight", StringComparison.Ordinal)) p.fill_(1); else p.zero_(); }
            else if (name.EndsWith(".bias", StringComparison.Ordinal)) p.zero_();
            else Init.Normal(p, name.EndsWith("c_proj.weight", StringComparison.Ordinal) ? residualStd : 0.02, generator);
        }
    }
}
