using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RetriKT.MLNet.SoftPrompt;

/// <summary>How soft prompts start (HF PEFT's PromptTuningInit: TEXT, SAMPLE_VOCAB, RANDOM).</summary>
public enum SoftPromptInit
{
    /// <summary>Embeddings of an initialisation text's tokens (repeated to fill the prompt). Per label, the label word is appended.</summary>
    Text,
    /// <summary>Embeddings of tokens sampled uniformly from the vocabulary.</summary>
    SampleVocabulary,
    /// <summary>Gaussian noise with the embedding matrix's standard deviation.</summary>
    Random,
}

/// <summary>
/// Label-conditioned soft prompts: one trainable prompt of <c>P</c> virtual tokens per label, plus an optional shared
/// task prompt of <c>S</c> tokens placed before it. Prompt for a row = <c>[task prompt; label prompt]</c>, shape
/// <c>[S + P, H]</c>; everything else in the model stays frozen.
/// </summary>
internal sealed class SoftPromptModule : nn.Module
{
    // Named as registered: Module.to (the move to the teacher's device) replaces each parameter with a copy on that
    // device and sets the field of the parameter's name. Fields of other names kept the disposed CPU tensors, and every
    // read of the prompts off the CPU failed ("Tensor invalid -- empty handle").
    private readonly Parameter label_prompts;   // [L, P, H]
    private readonly Parameter? task_prompt;    // [S, H]

    /// <summary>Creates the module from initial values <c>[L, P, H]</c> and, optionally, <c>[S, H]</c> (copied).</summary>
    public SoftPromptModule(Tensor labelPrompts, Tensor? taskPrompt) : base(nameof(SoftPromptModule))
    {
        if (labelPrompts.dim() != 3) throw new ArgumentException($"label prompts must be [labels, tokens, hidden], found [{string.Join(", ", labelPrompts.shape)}].");
        if (taskPrompt is not null && (taskPrompt.dim() != 2 || taskPrompt.shape[1] != labelPrompts.shape[2]))
            throw new ArgumentException($"task prompt must be [tokens, {labelPrompts.shape[2]}], found [{string.Join(", ", taskPrompt.shape)}].");
        label_prompts = new Parameter(labelPrompts.detach().clone().to(ScalarType.Float32), requires_grad: true);
        task_prompt = taskPrompt is null ? null : new Parameter(taskPrompt.detach().clone().to(ScalarType.Float32), requires_grad: true);
        // The module owns its parameters: keep them out of any dispose scope the caller happens to be in.
        label_prompts.DetachFromDisposeScope();
        task_prompt?.DetachFromDisposeScope();
        register_parameter(nameof(label_prompts), label_prompts);
        if (task_prompt is not null) register_parameter(nameof(task_prompt), task_prompt);
    }

    public int Labels => (int)label_prompts.shape[0];
    public int LabelTokens => (int)label_prompts.shape[1];
    public int TaskTokens => task_prompt is null ? 0 : (int)task_prompt.shape[0];
    public int Length => TaskTokens + LabelTokens;
    public int Hidden => (int)label_prompts.shape[2];

    /// <summary>Prompts for a batch of label indices <c>[B]</c> → <c>[B, S + P, H]</c> in <paramref name="dtype"/>.</summary>
    public Tensor PromptsFor(Tensor labels, ScalarType dtype)
    {
        var perRow = label_prompts.index_select(0, labels);                              // [B, P, H]
        if (task_prompt is not null)
            perRow = cat([task_prompt.unsqueeze(0).expand(labels.shape[0], -1, -1), perRow], 1);
        return perRow.to(dtype);
    }

    /// <summary>A detached copy of all prompt values, for saving and for the frozen reference policy.</summary>
    public (float[] LabelPrompts, float[]? TaskPrompt) Snapshot()
    {
        using var scope = NewDisposeScope(); // the detached views and CPU copies (the caller may have no scope)
        return (label_prompts.detach().cpu().data<float>().ToArray(), task_prompt?.detach().cpu().data<float>().ToArray());
    }

    /// <summary>Builds initial prompt values from the teacher's embedding matrix <c>[V, H]</c>.</summary>
    public static (Tensor LabelPrompts, Tensor? TaskPrompt) Initialize(SoftPromptInit init, Tensor embeddingMatrix, int labels, int labelTokens,
        int taskTokens, Func<int, int[]> initTokensForLabel, int[] taskInitTokens, Generator generator)
    {
        long vocab = embeddingMatrix.shape[0];
        var weights = embeddingMatrix.detach().to(ScalarType.Float32);
        Tensor FromIds(int[] ids, int count)
        {
            if (ids.Length == 0) ids = [0];
            var repeated = Enumerable.Range(0, count).Select(i => (long)ids[i % ids.Length]).ToArray();
            return weights.index_select(0, tensor(repeated, device: weights.device));
        }
        Tensor Make(int count, Func<int[]> textIds) => init switch
        {
            SoftPromptInit.Text => FromIds(textIds(), count),
            SoftPromptInit.SampleVocabulary => weights.index_select(0, randint(0, vocab, [count], generator: generator, device: CPU).to(weights.device)),
            _ => randn([count, weights.shape[1]], generator: generator, device: CPU).to(weights.device).mul(weights.std()),
        };
        var label = stack(Enumerable.Range(0, labels).Select(l => Make(labelTokens, () => initTokensForLabel(l))).ToArray());
        var task = taskTokens > 0 ? Make(taskTokens, () => taskInitTokens) : null;
        return (label, task);
    }
}

/// <summary>PPO value head: a linear map from the teacher's last hidden state to a scalar value per token.</summary>
internal sealed class ValueHead : nn.Module<Tensor, Tensor>
{
    private readonly Linear _linear;

    /// <summary>A value head initialised from <paramref name="seed"/> alone: torch's process-wide generator is neither seeded nor drawn from.</summary>
    public ValueHead(int hidden, long seed) : base(nameof(ValueHead))
    {
        // A private generator: the process-wide one is the application's and every other thread's; seeding it reset their
        // random streams, and a draw from it by another thread between the seeding and this one changed the whole PPO
        // run. It first draws what nn.Linear's own initialisation drew when this head came from the process-wide
        // generator seeded with the run's seed, so a seed still trains the prompts it trained before.
        using var generator = new Generator((ulong)seed);
        double bound = 1 / Math.Sqrt(hidden); // nn.Linear's: kaiming_uniform_(a = √5) for the weight, the same for the bias
        Parameter weight, bias;
        using (NewDisposeScope())
        using (no_grad())
        {
            var w = empty(1, hidden).uniform_(-bound, bound, generator);
            var b = empty(1).uniform_(-bound, bound, generator);
            w.normal_(0, 1.0 / Math.Sqrt(hidden), generator);
            b.zero_();
            weight = new Parameter(w.MoveToOuterDisposeScope());
            bias = new Parameter(b.MoveToOuterDisposeScope());
        }
        _linear = nn.Linear(weight, bias);
        register_module("linear", _linear);
    }

    /// <summary>Values <c>[B, T]</c> for hidden states <c>[B, T, H]</c>.</summary>
    public override Tensor forward(Tensor hidden) => _linear.forward(hidden.to(ScalarType.Float32)).squeeze(-1);
}
