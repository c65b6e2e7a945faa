using Microsoft.ML;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Teacher;

/// <summary>Options of <see cref="TeacherPretrainer"/>.</summary>
public sealed class TeacherPretrainerOptions
{
    /// <summary>Optimizer steps. Default 1000.</summary>
    public int Steps = 1000;
    /// <summary>Sequences per step. Default 16.</summary>
    public int BatchSize = 16;
    /// <summary>Tokens per training sequence (capped at the model's context). Default 128.</summary>
    public int SequenceLength = 128;
    /// <summary>Peak learning rate. Default 1e-3.</summary>
    public double LearningRate = 1e-3;
    /// <summary>Final learning rate as a fraction of the peak (cosine decay floor). Default 0.1.</summary>
    public double MinLearningRateFraction = 0.1;
    /// <summary>Linear warmup steps. Default 100.</summary>
    public int WarmupSteps = 100;
    /// <summary>AdamW weight decay (applied to matrices only, not norms/biases). Default 0.1.</summary>
    public double WeightDecay = 0.1;
    /// <summary>AdamW beta1. Default 0.9.</summary>
    public double Beta1 = 0.9;
    /// <summary>AdamW beta2. Default 0.95.</summary>
    public double Beta2 = 0.95;
    /// <summary>Global gradient-norm clip; 0 disables. Default 1.</summary>
    public double GradientClipNorm = 1.0;
    /// <summary>Write a checkpoint to <see cref="CheckpointDirectory"/> every this many steps (and at the end); 0 only at the end. Default 0.</summary>
    public int CheckpointEvery;
    /// <summary>Where checkpoints go (HF layout, loadable by <see cref="TeacherModel.Load"/>); null writes none. Default null.</summary>
    public string? CheckpointDirectory;
    /// <summary>Seed of batch sampling; null uses the MLContext seed. Default null.</summary>
    public int? Seed;
}

/// <summary>
/// Pretrains a teacher on unlabeled text with the next-token loss: AdamW, linear warmup then cosine decay, gradient
/// clipping, periodic checkpoints, progress through <see cref="ComponentHost"/> (MLContext log + IProgress) and
/// cancellation. The corpus is tokenized once (BOS + text + EOS per document) into one stream; each step samples
/// random windows from it.
/// </summary>
public sealed class TeacherPretrainer
{
    private readonly IHostEnvironment _env;
    private readonly TeacherPretrainerOptions _options;

    /// <summary>Creates a pretrainer that logs through <paramref name="mlContext"/>.</summary>
    public TeacherPretrainer(MLContext mlContext, TeacherPretrainerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        _env = mlContext;
        _options = options ?? new TeacherPretrainerOptions();
        if (_options.Steps <= 0 || _options.BatchSize <= 0 || _options.SequenceLength < 2 || _options.LearningRate <= 0 || _options.WarmupSteps < 0)
            throw new ArgumentOutOfRangeException(nameof(options), "Steps, BatchSize, LearningRate must be > 0, SequenceLength >= 2, WarmupSteps >= 0.");
    }

    /// <summary>Tokenizes <paramref name="documents"/> with the model's tokenizer and trains on them. Returns the mean loss of the last tenth of the steps.</summary>
    public double Train(TeacherModel model, IEnumerable<string> documents, IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(model); ArgumentNullException.ThrowIfNull(documents);
        var tokenizer = model.Tokenizer ?? throw new InvalidOperationException("The model has no tokenizer; pass a token stream to Train(model, int[]).");
        var stream = new List<int>();
        foreach (var doc in documents)
        {
            if (string.IsNullOrWhiteSpace(doc)) continue;
            stream.AddRange(tokenizer.Encode(doc, addBos: true));
            if (tokenizer.EosId is int eos) stream.Add(eos);
        }
        return Train(model, stream.ToArray(), progress, cancellation);
    }

    /// <summary>Trains on a token stream. Returns the mean loss of the last tenth of the steps.</summary>
    public double Train(TeacherModel model, int[] tokens, IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(model); ArgumentNullException.ThrowIfNull(tokens);
        var o = _options;
        var host = new ComponentHost(_env, nameof(TeacherPretrainer), o.Seed, progress, cancellation);
        int seqLen = Math.Min(o.SequenceLength, model.Config.MaxPositions);
        if (tokens.Length < seqLen + 1)
            throw new ArgumentException($"The corpus has {tokens.Length} tokens; at least {seqLen + 1} are needed for one training window of {seqLen}.", nameof(tokens));
        foreach (var t in tokens)
            if (t < 0 || t >= model.Config.VocabSize) throw new ArgumentOutOfRangeException(nameof(tokens), $"Token id {t} is outside [0, {model.Config.VocabSize}).");
        host.Info($"Pretraining {model.Config} ({model.ParameterCount:N0} parameters) on {tokens.Length:N0} tokens: {o.Steps} steps × {o.BatchSize} × {seqLen}.");

        var device = model.Device;
        using var corpus = tensor(tokens.Select(t => (long)t).ToArray(), device: device);
        model.RequiresGrad = true;
        var decay = model.NamedParameters().Where(p => p.Parameter.dim() >= 2).Select(p => p.Parameter).ToList();
        var noDecay = model.NamedParameters().Where(p => p.Parameter.dim() < 2).Select(p => p.Parameter).ToList();
        using var optimizer = optim.AdamW(
            [new TorchSharp.Modules.AdamW.ParamGroup(decay, new TorchSharp.Modules.AdamW.Options { weight_decay = o.WeightDecay }),
             new TorchSharp.Modules.AdamW.ParamGroup(noDecay, new TorchSharp.Modules.AdamW.Options { weight_decay = 0 })],
            o.LearningRate, o.Beta1, o.Beta2, 1e-8, o.WeightDecay);
        using var generator = new Generator((ulong)host.Seed);
        var module = model.Module;
        module.train();
        double smoothed = double.NaN, tailSum = 0;
        int tailFrom = o.Steps - Math.Max(1, o.Steps / 10) + 1;
        try
        {
            for (int step = 1; step <= o.Steps; step++)
            {
                double lr = LearningRateAt(step, o);
                foreach (var g in optimizer.ParamGroups) g.LearningRate = lr;
                using var scope = NewDisposeScope();
                var starts = randint(0, tokens.Length - seqLen, [o.BatchSize], ScalarType.Int64, CPU, generator: generator).to(device);
                var window = starts.unsqueeze(1).add(arange(seqLen + 1, ScalarType.Int64, device));
                var batch = corpus.index_select(0, window.flatten()).view(o.BatchSize, seqLen + 1);
                var inputs = batch.narrow(1, 0, seqLen);
                var targets = batch.narrow(1, 1, seqLen);
                var logits = model.Forward(module.EmbedTokens(inputs)).Logits;
                var loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]).to(ScalarType.Float32), targets.reshape(-1));
                optimizer.zero_grad();
                loss.backward();
                double gradNorm = o.GradientClipNorm > 0 ? nn.utils.clip_grad_norm_(module.parameters(), o.GradientClipNorm) : double.NaN;
                optimizer.step();
                double value = loss.item<float>();
                if (!double.IsFinite(value)) throw new InvalidOperationException($"Pretraining diverged at step {step}: loss {value}. Lower LearningRate or raise WarmupSteps.");
                smoothed = double.IsNaN(smoothed) ? value : 0.95 * smoothed + 0.05 * value;
                if (step >= tailFrom) tailSum += value;
                host.Report("Pretrain", step, o.Steps, new Dictionary<string, double> { ["loss"] = value, ["smoothedLoss"] = smoothed, ["lr"] = lr, ["gradNorm"] = gradNorm });
                if (o.CheckpointDirectory is { } dir && o.CheckpointEvery > 0 && step % o.CheckpointEvery == 0 && step < o.Steps)
                    model.SaveCheckpoint(dir);
            }
        }
        finally
        {
            module.eval();
            model.InvalidateContentHash();
        }
        if (o.CheckpointDirectory is { } final) model.SaveCheckpoint(final);
        return tailSum / (o.Steps - tailFrom + 1);
    }

    /// <summary>Linear warmup to the peak, then cosine decay to <c>MinLearningRateFraction × peak</c> at the last step.</summary>
    internal static double LearningRateAt(int step, TeacherPretrainerOptions o)
    {
        if (o.WarmupSteps > 0 && step <= o.WarmupSteps) return o.LearningRate * step / o.WarmupSteps;
        double progress = o.Steps <= o.WarmupSteps ? 1 : (double)(step - o.WarmupSteps) / (o.Steps - o.WarmupSteps);
        double min = o.LearningRate * o.MinLearningRateFraction;
        return min + 0.5 * (o.LearningRate - min) * (1 + Math.Cos(Math.PI * Math.Clamp(progress, 0, 1)));
    }
}
