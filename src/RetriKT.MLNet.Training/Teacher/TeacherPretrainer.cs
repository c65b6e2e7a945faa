using Microsoft.ML;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Common;
using TorchSharp;
using TorchSharp.Modules;
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
    /// <summary>
    /// Dropout on the input embeddings and on every block's attention and MLP outputs while training (0 = none, the
    /// default). Continued pretraining on a small labelled split memorises it without; the masks are drawn from a
    /// generator derived from the seed and the step, so a resumed run drops the same units.
    /// </summary>
    public double Dropout;
    /// <summary>AdamW beta1. Default 0.9.</summary>
    public double Beta1 = 0.9;
    /// <summary>AdamW beta2. Default 0.95.</summary>
    public double Beta2 = 0.95;
    /// <summary>Global gradient-norm clip; 0 disables. Default 1.</summary>
    public double GradientClipNorm = 1.0;
    /// <summary>Write a checkpoint to <see cref="CheckpointDirectory"/> every this many steps (and at the end); 0 only at the end. Default 0.</summary>
    public int CheckpointEvery;
    /// <summary>
    /// Where checkpoints go (HF layout, loadable by <see cref="TeacherModel.Load"/>); null writes none. One run at a time:
    /// a run holds <see cref="TeacherPretrainer.LockFileName"/> there, and a second one fails naming the first. Default null.
    /// </summary>
    public string? CheckpointDirectory;
    /// <summary>Seed of batch sampling; null uses the MLContext seed. Default null.</summary>
    public int? Seed;
    /// <summary>
    /// Continue an interrupted run from the last checkpoint in <see cref="CheckpointDirectory"/> (weights, optimizer
    /// state and step), when that checkpoint was written by a run with the same options, corpus and starting weights;
    /// a checkpoint of any other run is refused with a message naming what differs. Default true.
    /// </summary>
    public bool Resume = true;
}

/// <summary>
/// Pretrains a teacher on unlabeled text with the next-token loss: AdamW, linear warmup then cosine decay, gradient
/// clipping, periodic checkpoints, progress through <see cref="ComponentHost"/> (MLContext log + IProgress) and
/// cancellation. The corpus is tokenized once (BOS + text + EOS per document) into one stream; each step samples
/// random windows from it.
/// </summary>
public sealed class TeacherPretrainer
{
    /// <summary>
    /// The lock file a run holds in <see cref="TeacherPretrainerOptions.CheckpointDirectory"/> while it pretrains (with
    /// "pretraining.lock.owner" beside it naming the process), so that a second run there fails instead of overwriting
    /// the first one's checkpoints.
    /// </summary>
    public const string LockFileName = "pretraining.lock";

    private readonly IHostEnvironment _env;
    private readonly TeacherPretrainerOptions _options;

    /// <summary>Creates a pretrainer that logs through <paramref name="mlContext"/>.</summary>
    public TeacherPretrainer(MLContext mlContext, TeacherPretrainerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        _env = mlContext;
        _options = options ?? new TeacherPretrainerOptions();
        // Each option named with the value found. Before, Beta1 or Beta2 of 1 and an infinite LearningRate ran into NaN weights
        // and "Lower LearningRate or raise WarmupSteps"; a negative MinLearningRateFraction trained the last steps at a
        // negative rate (gradient ascent) and a negative GradientClipNorm or CheckpointEvery was taken as 0, all without a word.
        var o = _options;
        void Check(bool ok, string message)
        {
            if (!ok) throw new ArgumentOutOfRangeException(nameof(options), string.Create(System.Globalization.CultureInfo.InvariantCulture, $"TeacherPretrainerOptions.{message}"));
        }
        Check(o.Steps > 0, $"Steps must be > 0, found {o.Steps}.");
        Check(o.BatchSize > 0, $"BatchSize must be > 0, found {o.BatchSize}.");
        Check(o.SequenceLength >= 2, $"SequenceLength must be >= 2, found {o.SequenceLength}.");
        Check(o.LearningRate > 0 && double.IsFinite(o.LearningRate), $"LearningRate must be > 0 and finite, found {o.LearningRate}.");
        Check(o.MinLearningRateFraction is >= 0 and <= 1, $"MinLearningRateFraction must be in [0, 1], found {o.MinLearningRateFraction}.");
        Check(o.WarmupSteps >= 0, $"WarmupSteps must be >= 0, found {o.WarmupSteps}.");
        Check(o.WeightDecay >= 0 && double.IsFinite(o.WeightDecay), $"WeightDecay must be >= 0 and finite, found {o.WeightDecay}.");
        Check(o.Dropout is >= 0 and < 1, $"Dropout must be in [0, 1), found {o.Dropout}.");
        Check(o.Beta1 is >= 0 and < 1, $"Beta1 must be in [0, 1), found {o.Beta1}.");
        Check(o.Beta2 is >= 0 and < 1, $"Beta2 must be in [0, 1), found {o.Beta2}.");
        Check(o.GradientClipNorm >= 0 && double.IsFinite(o.GradientClipNorm), $"GradientClipNorm must be >= 0 and finite (0 turns clipping off), found {o.GradientClipNorm}.");
        Check(o.CheckpointEvery >= 0, $"CheckpointEvery must be >= 0 (0: only at the end), found {o.CheckpointEvery}.");
    }

    /// <summary>Tokenizes <paramref name="documents"/> with the model's tokenizer and trains on them. Returns the mean loss of the last tenth of the steps.</summary>
    public double Train(TeacherModel model, IEnumerable<string> documents, IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(model); ArgumentNullException.ThrowIfNull(documents);
        var tokenizer = model.Tokenizer ?? throw new InvalidOperationException("The model has no tokenizer; pass a token stream to Train(model, int[]).");
        return Train(model, TokenStream(tokenizer, documents, cancellation), progress, cancellation);
    }

    /// <summary>
    /// The token stream and per-token loss weights of (prefix, target) documents: BOS + prefix + target + EOS each,
    /// where the target's tokens weigh <paramref name="targetWeight"/> and every other token 1 — for example a task
    /// sample rendered through its template (prefix) with the verbalizer word as the target, so continued pretraining
    /// learns the task and not only its text. A target whose tokens do not continue the prefix's tokens (the
    /// tokenizer merged across the boundary) is weighted from the first token that differs.
    /// </summary>
    public static (int[] Tokens, float[] Weights) WeightedTokenStream(TeacherTokenizer tokenizer, IReadOnlyList<(string Prefix, string Target)> documents, float targetWeight)
    {
        ArgumentNullException.ThrowIfNull(tokenizer); ArgumentNullException.ThrowIfNull(documents);
        if (!(targetWeight >= 0) || !float.IsFinite(targetWeight)) throw new ArgumentOutOfRangeException(nameof(targetWeight), $"targetWeight must be finite and >= 0, found {targetWeight}.");
        var encoded = new (int[] Ids, int TargetFrom)[documents.Count];
        Parallel.For(0, documents.Count, i =>
        {
            var (prefix, target) = documents[i];
            var ids = tokenizer.Encode(prefix + target, addBos: true);
            var prefixIds = tokenizer.Encode(prefix, addBos: true);
            int from = 0;
            while (from < prefixIds.Length && from < ids.Length && ids[from] == prefixIds[from]) from++;
            encoded[i] = (ids, target.Length == 0 ? ids.Length : from);
        });
        int total = encoded.Sum(e => e.Ids.Length + (tokenizer.EosId is null ? 0 : 1));
        var tokens = new int[total];
        var weights = new float[total];
        int at = 0;
        foreach (var (ids, from) in encoded)
        {
            for (int j = 0; j < ids.Length; j++, at++) { tokens[at] = ids[j]; weights[at] = j >= from ? targetWeight : 1f; }
            if (tokenizer.EosId is int eos) { tokens[at] = eos; weights[at] = 1f; at++; }
        }
        return (tokens, weights);
    }

    /// <summary>
    /// The training token stream of <paramref name="documents"/>: BOS + text + EOS per non-blank document, in order.
    /// Documents are encoded in parallel (the tokenizers are thread-safe).
    /// </summary>
    public static int[] TokenStream(TeacherTokenizer tokenizer, IEnumerable<string> documents) => TokenStream(tokenizer, documents, CancellationToken.None);

    // Cancellable while the corpus is read and encoded: Train(documents) honoured a cancellation only after reading and
    // encoding all of it (9 s for the 21 MB IMDb corpus) and training one step.
    internal static int[] TokenStream(TeacherTokenizer tokenizer, IEnumerable<string> documents, CancellationToken cancellation)
    {
        ArgumentNullException.ThrowIfNull(tokenizer); ArgumentNullException.ThrowIfNull(documents);
        cancellation.ThrowIfCancellationRequested();
        var docs = documents.Where(d => { cancellation.ThrowIfCancellationRequested(); return !string.IsNullOrWhiteSpace(d); }).ToList();
        var encoded = new int[docs.Count][];
        Parallel.For(0, docs.Count, new ParallelOptions { CancellationToken = cancellation }, i => encoded[i] = tokenizer.Encode(docs[i], addBos: true));
        var stream = new List<int>(encoded.Sum(e => e.Length + 1));
        foreach (var e in encoded)
        {
            stream.AddRange(e);
            if (tokenizer.EosId is int eos) stream.Add(eos);
        }
        return stream.ToArray();
    }

    /// <summary>Trains on a token stream. Returns the mean loss of the last tenth of the steps.</summary>
    public double Train(TeacherModel model, int[] tokens, IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default)
        => Train(model, tokens, weights: null, progress, cancellation);

    /// <summary>
    /// Trains on a token stream whose next-token losses are weighted per target token (<paramref name="weights"/>,
    /// parallel to <paramref name="tokens"/>; null weighs every token 1): each window's loss is Σ wᵢ·CEᵢ / Σ wᵢ.
    /// Weights let continued pretraining stress the part of a document that carries the task (see
    /// <see cref="WeightedTokenStream"/>). Returns the weighted mean loss of the last tenth of the steps.
    /// </summary>
    public double Train(TeacherModel model, int[] tokens, float[]? weights, IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(model); ArgumentNullException.ThrowIfNull(tokens);
        if (weights is not null && weights.Length != tokens.Length)
            throw new ArgumentException($"weights has {weights.Length} entries but the token stream {tokens.Length}; they must be parallel.", nameof(weights));
        if (weights is not null && weights.Any(w => !(w >= 0) || !float.IsFinite(w)))
            throw new ArgumentException("Token weights must be finite and >= 0.", nameof(weights));
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
        using var corpusWeights = weights is null ? null : tensor(weights, device: device);
        model.RequiresGrad = true;
        var parameters = model.NamedParameters().ToList();
        using var optimizer = HeldAdamW.DecayingMatrices(parameters.Select(p => p.Parameter), o.LearningRate, o.Beta1, o.Beta2, o.WeightDecay);
        var module = model.Module;
        double smoothed = double.NaN, tailSum = 0;
        int tailFrom = o.Steps - Math.Max(1, o.Steps / 10) + 1;
        int firstStep = 1;
        // Before the resume reads (and clears a stopped save from) the folder: a second run there would overwrite the
        // first one's checkpoints step by step.
        using var folderLock = o.CheckpointDirectory is { } lockedDir ? FolderLock.Acquire(lockedDir, LockFileName, Environment.CommandLine, owner =>
            $"Another pretraining run ({owner}) is writing checkpoints in {Path.GetFullPath(lockedDir)}; two runs there would overwrite each other's " +
            "checkpoints. Wait for it to finish, or give this run another TeacherPretrainerOptions.CheckpointDirectory.") : null;
        var resume = o.CheckpointDirectory is { } checkpointDir ? PretrainingResume.For(checkpointDir, o, host.Seed, tokens, weights, model) : null;
        if (resume is not null && o.Resume && resume.TryLoad(model, optimizer, host) is { } state)
        {
            (firstStep, smoothed, tailSum) = (state.Step + 1, state.SmoothedLoss, state.TailLossSum);
            host.Info($"Resuming pretraining at step {firstStep} of {o.Steps} from {o.CheckpointDirectory}.");
        }
        module.train();
        module.ResidualDropout = o.Dropout;
        try
        {
            for (int step = firstStep; step <= o.Steps; step++)
            {
                host.CheckAlive(); // before the step: a run cancelled before it began trained its first step on the model

                // A generator per step (derived from the seed and the step) makes a resumed run sample the same windows.
                using var generator = new Generator((ulong)SeedMixer.Derive(host.Seed, "pretrain-window", step));
                double lr = LearningRateAt(step, o);
                optimizer.LearningRate = lr;
                using var scope = NewDisposeScope();
                // The masks from a generator of this run's, seeded from the seed and the step (a resumed run draws the same),
                // with the draws torch's process-wide one gave when it was seeded here: seeding that one every step reset the
                // application's random stream and every other thread's.
                using var dropoutGenerator = o.Dropout > 0 ? new Generator((ulong)SeedMixer.Derive(host.Seed, "pretrain-dropout", step)) : null;
                module.DropoutGenerator = dropoutGenerator;
                var starts = randint(0, tokens.Length - seqLen, [o.BatchSize], ScalarType.Int64, CPU, generator: generator).to(device);
                var window = starts.unsqueeze(1).add(HeldScalars.Arange(seqLen + 1, ScalarType.Int64, device), HeldScalars.One);
                var batch = corpus.index_select(0, window.flatten()).view(o.BatchSize, seqLen + 1);
                var inputs = batch.narrow(1, 0, seqLen);
                var targets = batch.narrow(1, 1, seqLen);
                var logits = model.Forward(module.EmbedTokens(inputs)).Logits;
                var flatLogits = logits.reshape(-1, logits.shape[^1]).to(ScalarType.Float32);
                Tensor loss;
                if (corpusWeights is null) loss = nn.functional.cross_entropy(flatLogits, targets.reshape(-1));
                else
                {
                    var targetWeights = corpusWeights.index_select(0, window.flatten()).view(o.BatchSize, seqLen + 1).narrow(1, 1, seqLen).reshape(-1);
                    var perToken = nn.functional.cross_entropy(flatLogits, targets.reshape(-1), reduction: nn.Reduction.None);
                    loss = (perToken * targetWeights).sum() / targetWeights.sum().clamp_min(HeldScalars.WeightSumFloor);
                }
                optimizer.ZeroGrad();
                loss.backward();
                double gradNorm = o.GradientClipNorm > 0 ? nn.utils.clip_grad_norm_(module.parameters(), o.GradientClipNorm) : double.NaN;
                double value = loss.item<float>();
                if (!double.IsFinite(value)) throw new InvalidOperationException($"Pretraining diverged at step {step}: loss {value}. Lower LearningRate or raise WarmupSteps.");
                optimizer.Step();
                // A finite loss does not make the update finite: at LearningRate 100 a step's loss read ln(vocabulary) while its
                // gradient was NaN, the update made the weights NaN, and that step's checkpoint held them (the load refuses
                // it, so the run could not resume; a run ending at that step would have returned the NaN weights).
                if (NonFiniteParameters.First(parameters) is { } bad)
                    throw new InvalidOperationException($"Pretraining diverged at step {step}: after the update, parameter '{bad.Name}' holds {bad.Count} NaN or " +
                        $"infinite values of {bad.Of} (loss {value}). Lower LearningRate or raise WarmupSteps.");
                smoothed = double.IsNaN(smoothed) ? value : 0.95 * smoothed + 0.05 * value;
                if (step >= tailFrom) tailSum += value;
                host.Report("Pretrain", step, o.Steps, new Dictionary<string, double> { ["loss"] = value, ["smoothedLoss"] = smoothed, ["lr"] = lr, ["gradNorm"] = gradNorm });
                if (resume is not null && o.CheckpointEvery > 0 && step % o.CheckpointEvery == 0 && step < o.Steps)
                    resume.Save(model, optimizer, new PretrainingState(step, smoothed, tailSum));
            }
        }
        finally
        {
            module.ResidualDropout = 0;
            module.DropoutGenerator = null;
            module.eval();
            model.InvalidateContentHash();
        }
        // A resumed run that had already finished trained nothing: its checkpoint is already the final one.
        if (firstStep <= o.Steps) resume?.Save(model, optimizer, new PretrainingState(o.Steps, smoothed, tailSum));
        return tailSum / (o.Steps - tailFrom + 1);
    }

    /// <summary>Linear warmup to the peak, then cosine decay to <c>MinLearningRateFraction × peak</c> at the last step.</summary>
    internal static double LearningRateAt(int step, TeacherPretrainerOptions o)
        => LearningRateSchedule.WarmupCosine(step, o.Steps, o.WarmupSteps, o.LearningRate, o.MinLearningRateFraction);
}
