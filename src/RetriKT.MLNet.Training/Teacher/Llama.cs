using RetriKT.MLNet.Common;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace RetriKT.MLNet.Teacher;

// LLaMA family decoder (LLaMA-2/3, Mistral, Qwen2, llama2.c), laid out like HF LlamaForCausalLM so parameter names
// match checkpoints: model.embed_tokens, model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
// post_attention_layernorm, mlp.{gate,up,down}_proj}, model.norm, lm_head (absent when tied).

/// <summary>Root-mean-square norm: w * x / sqrt(mean(x²) + eps), computed in float32 like the reference.</summary>
internal sealed class RmsNorm : Module<Tensor, Tensor>
{
    private readonly Parameter weight;
    // Held for the module's life (see HeldScalars): a CI test died here in pow with Scalar.h's tag check.
    private readonly Scalar _eps;

    public RmsNorm(long dim, double eps, ScalarType dtype, Device device) : base(nameof(RmsNorm))
    {
        weight = Parameter(ones(dim, dtype, device));
        _eps = eps.ToScalar();
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        bool narrow = x.dtype != ScalarType.Float32;
        var x32 = narrow ? x.to(ScalarType.Float32) : x;
        // pow(Two), not square(): TorchSharp's square() is pow(2) with a temporary Scalar.
        var normed = x32.mul(x32.pow(HeldScalars.Two).mean([-1L], keepdim: true).add_(_eps, HeldScalars.One).rsqrt());
        return weight.mul(narrow ? normed.to(x.dtype) : normed).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _eps.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary>Grouped-query self-attention with rotary positions and an optional key/value cache.</summary>
internal sealed class LlamaAttention : Module
{
    private readonly Linear q_proj, k_proj, v_proj, o_proj;
    private readonly int _heads, _kvHeads, _headDim, _layer;

    public LlamaAttention(TeacherConfig c, int layer, ScalarType dtype, Device device) : base(nameof(LlamaAttention))
    {
        _heads = c.NumHeads; _kvHeads = c.NumKeyValueHeads; _headDim = c.HeadDim; _layer = layer;
        q_proj = Linear(c.HiddenSize, c.NumHeads * c.HeadDim, c.QkvBias, device, dtype);
        k_proj = Linear(c.HiddenSize, c.NumKeyValueHeads * c.HeadDim, c.QkvBias, device, dtype);
        v_proj = Linear(c.HiddenSize, c.NumKeyValueHeads * c.HeadDim, c.QkvBias, device, dtype);
        o_proj = Linear(c.NumHeads * c.HeadDim, c.HiddenSize, c.OutputProjectionBias, device, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? bias, KvCache? cache)
    {
        long b = x.shape[0], t = x.shape[1];
        if (cache is not null && t == 1) return DecodeStep(x, cos, sin, bias, cache);
        var q = q_proj.forward(x).view(b, t, _heads, _headDim).transpose(1, 2);
        var k = k_proj.forward(x).view(b, t, _kvHeads, _headDim).transpose(1, 2);
        var v = v_proj.forward(x).view(b, t, _kvHeads, _headDim).transpose(1, 2);
        q = Rotary.Apply(q, cos, sin);
        k = Rotary.Apply(k, cos, sin);
        if (cache is not null) (k, v) = cache.Append(_layer, k, v);
        if (_kvHeads != _heads)
        {
            // Each kv head serves heads/kvHeads consecutive query heads.
            k = k.repeat_interleave(_heads / _kvHeads, 1);
            v = v.repeat_interleave(_heads / _kvHeads, 1);
        }
        var y = functional.scaled_dot_product_attention(q, k, v, bias, 0.0, is_casual: bias is null && t > 1);
        return o_proj.forward(y.transpose(1, 2).reshape(b, t, _heads * _headDim));
    }

    // One new position per row: attend over the cache in place (see Attention.SingleQuery); same maths as above.
    private Tensor DecodeStep(Tensor x, Tensor cos, Tensor sin, Tensor? bias, KvCache cache)
    {
        long b = x.shape[0];
        var q = Rotary.Apply(q_proj.forward(x).view(b, _heads, 1, _headDim), cos, sin);
        var k = Rotary.Apply(k_proj.forward(x).view(b, _kvHeads, 1, _headDim), cos, sin);
        var v = v_proj.forward(x).view(b, _kvHeads, 1, _headDim);
        var (keys, values) = cache.Append(_layer, k, v);
        return o_proj.forward(Attention.SingleQuery(q, keys, values, bias));
    }
}

/// <summary>SwiGLU feed-forward: down(silu(gate(x)) * up(x)).</summary>
internal sealed class LlamaMlp : Module<Tensor, Tensor>
{
    private readonly Linear gate_proj, up_proj, down_proj;

    public LlamaMlp(TeacherConfig c, ScalarType dtype, Device device) : base(nameof(LlamaMlp))
    {
        gate_proj = Linear(c.HiddenSize, c.IntermediateSize, c.MlpBias, device, dtype);
        up_proj = Linear(c.HiddenSize, c.IntermediateSize, c.MlpBias, device, dtype);
        down_proj = Linear(c.IntermediateSize, c.HiddenSize, c.MlpBias, device, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => down_proj.forward(functional.silu(gate_proj.forward(x)).mul(up_proj.forward(x)));
}

/// <summary>Pre-norm decoder block: x + attn(norm(x)), then x + mlp(norm(x)).</summary>
internal sealed class LlamaBlock : Module
{
    private readonly RmsNorm input_layernorm, post_attention_layernorm;
    private readonly LlamaAttention self_attn;
    private readonly LlamaMlp mlp;

    public LlamaBlock(TeacherConfig c, int layer, ScalarType dtype, Device device) : base(nameof(LlamaBlock))
    {
        input_layernorm = new RmsNorm(c.HiddenSize, c.NormEpsilon, dtype, device);
        self_attn = new LlamaAttention(c, layer, dtype, device);
        post_attention_layernorm = new RmsNorm(c.HiddenSize, c.NormEpsilon, dtype, device);
        mlp = new LlamaMlp(c, dtype, device);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? bias, KvCache? cache, ResidualDrop dropout)
    {
        x = x.add(dropout.Apply(self_attn.Forward(input_layernorm.forward(x), cos, sin, bias, cache)), HeldScalars.One);
        return x.add(dropout.Apply(mlp.forward(post_attention_layernorm.forward(x))), HeldScalars.One);
    }
}

/// <summary>Embeddings + blocks + final norm (HF "model.").</summary>
internal sealed class LlamaBackbone : Module
{
    internal readonly Embedding embed_tokens;
    internal readonly ModuleList<LlamaBlock> layers;
    internal readonly RmsNorm norm;

    public LlamaBackbone(TeacherConfig c, ScalarType dtype, Device device) : base(nameof(LlamaBackbone))
    {
        embed_tokens = Embedding(c.VocabSize, c.HiddenSize, device: device, dtype: dtype);
        layers = new ModuleList<LlamaBlock>(Enumerable.Range(0, c.NumLayers).Select(i => new LlamaBlock(c, i, dtype, device)).ToArray());
        norm = new RmsNorm(c.HiddenSize, c.NormEpsilon, dtype, device);
        RegisterComponents();
    }
}

/// <summary>The LLaMA-family causal LM (HF LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM layout).</summary>
internal sealed class LlamaForCausalLM : CausalLMModule
{
    private readonly LlamaBackbone model;
    private readonly Linear? lm_head;
    private readonly Tensor inv_freq;

    public LlamaForCausalLM(TeacherConfig c, ScalarType dtype, Device device) : base(nameof(LlamaForCausalLM), c)
    {
        model = new LlamaBackbone(c, dtype, device);
        register_module("model", model);
        if (!c.TieWordEmbeddings)
        {
            lm_head = Linear(c.HiddenSize, c.VocabSize, hasBias: false, device, dtype);
            register_module("lm_head", lm_head);
        }
        // In a scope: the CPU tensor the frequencies are built in, and its handle from to(), were left to the finalizer
        // (two tensors per teacher loaded); the buffer is the module's, disposed with it.
        using (NewDisposeScope()) inv_freq = Rotary.InverseFrequencies(c).to(device).DetachFromDisposeScope();
        register_buffer("inv_freq", inv_freq, persistent: false);
    }

    public override Tensor EmbedTokens(Tensor ids) => model.embed_tokens.forward(ids);

    public override Tensor Decode(Tensor embeds, Tensor positions, Tensor? attentionBias, KvCache? cache)
    {
        var (cos, sin) = RotaryAngles(positions, embeds.dtype, embeds.shape[1] + (cache?.Length ?? 0));
        var dropout = ActiveDropout;
        var x = dropout.Apply(embeds);
        foreach (var block in model.layers) x = block.Forward(x, cos, sin, attentionBias, cache, dropout);
        return model.norm.forward(x);
    }

    public override Tensor LmHead(Tensor hidden) =>
        lm_head is null ? functional.linear(hidden, model.embed_tokens.weight!) : lm_head.forward(hidden);

    // cos/sin tables for the positions seen so far, grown by doubling (a 128K-context model does not pay for its whole
    // context up front). Rebuilt if the dtype or device changes. Positions lie below the sequence's slot count. The
    // lookup copies rows, so the lock only guards the swap against a concurrent caller still reading the old table.
    private readonly object _tableLock = new();
    private Tensor? _cosTable, _sinTable;

    private (Tensor Cos, Tensor Sin) RotaryAngles(Tensor positions, ScalarType dtype, long slots)
    {
        lock (_tableLock)
        {
            bool stale = _cosTable is null || _cosTable.shape[0] < slots || _cosTable.dtype != dtype ||
                         _cosTable.device_type != inv_freq.device_type || _cosTable.device_index != inv_freq.device_index;
            if (stale)
            {
                long grown = Math.Max(Math.Max(slots, 2 * (_cosTable?.shape[0] ?? 0)), 64);
                long size = Math.Min(grown, Math.Max(slots, Config.MaxPositions));
                _cosTable?.Dispose(); _sinTable?.Dispose();
                var (cos, sin) = Rotary.Tables(inv_freq, size, dtype);
                _cosTable = cos.DetachFromDisposeScope(); _sinTable = sin.DetachFromDisposeScope();
            }
            return Rotary.Angles(_cosTable!, _sinTable!, positions);
        }
    }

    protected override void Dispose(bool disposing)
    {
        // inv_freq too: a non-persistent buffer is not among buffers(), so the base class leaves it.
        if (disposing) { _cosTable?.Dispose(); _sinTable?.Dispose(); _cosTable = _sinTable = null; inv_freq.Dispose(); }
        base.Dispose(disposing);
    }

    public override void InitializeWeights(Generator generator)
    {
        using var _ = no_grad();
        double residualStd = 0.02 / Math.Sqrt(2 * Config.NumLayers);
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("layernorm.weight", StringComparison.Ordinal) || name.EndsWith("norm.weight", StringComparison.Ordinal)) p.fill_(1);
            else if (name.EndsWith(".bias", StringComparison.Ordinal)) p.zero_();
            else
            {
                bool residual = name.EndsWith("o_proj.weight", StringComparison.Ordinal) || name.EndsWith("down_proj.weight", StringComparison.Ordinal);
                Init.Normal(p, residual ? residualStd : 0.02, generator);
            }
        }
    }
}
