using System.Globalization;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Teacher;

namespace RetriKT.MLNet.SoftPrompt;

/// <summary>Options of <see cref="SoftPromptPpoTrainer"/>. Defaults follow HF PEFT prompt tuning and HF TRL PPO, scaled to small teachers.</summary>
public sealed class SoftPromptPpoOptions
{
    /// <summary>Defaults that the catalog's simple overload shares (C# optional parameters need constants).</summary>
    internal static class Defaults
    {
        public const string LabelColumnName = "Label";
        public const int PromptTokens = 8, SupervisedEpochs = 20, PpoSteps = 10;
        public const double PpoLearningRate = 3e-3, MaxUpdateKl = 0.05;
    }

    // ---- data and teacher
    /// <summary>Path of the teacher (HF directory or llama2.c .bin). Required unless <see cref="Teacher"/> is set with a path.</summary>
    public string? TeacherPath;
    /// <summary>An already loaded teacher to use instead of loading <see cref="TeacherPath"/> (its path must still be given, for model.zip).</summary>
    public TeacherModel? Teacher;
    /// <summary>The task template (columns, generation target, verbalizer). Required.</summary>
    public TaskTemplate? Template;
    /// <summary>Label column (String, or a key type with text key values). Default "Label".</summary>
    public string LabelColumnName = Defaults.LabelColumnName;
    /// <summary>Label order; null takes the order of the template's verbalizer. Every label needs at least one example.</summary>
    public IReadOnlyList<string>? Labels;

    // ---- soft prompts
    /// <summary>Virtual tokens per label prompt. Default 8.</summary>
    public int PromptTokens = Defaults.PromptTokens;
    /// <summary>Virtual tokens of the shared task prompt placed before the label prompt; 0 for none. Default 0.</summary>
    public int TaskPromptTokens;
    /// <summary>Initialisation. Default <see cref="SoftPromptInit.Text"/> (init text + the label's verbalizer word).</summary>
    public SoftPromptInit Init = SoftPromptInit.Text;
    /// <summary>Initialisation text for <see cref="SoftPromptInit.Text"/>. Default "Write an example:".</summary>
    public string InitText = "Write an example:";

    // ---- stage 1: supervised prompt tuning
    /// <summary>Epochs of supervised prompt tuning over the few-shot examples. Default 20.</summary>
    public int SupervisedEpochs = Defaults.SupervisedEpochs;
    /// <summary>Adam learning rate of stage 1 (prompt tuning uses large rates). Default 0.03.</summary>
    public double SupervisedLearningRate = 0.03;
    /// <summary>Examples per stage-1 step. Default 8.</summary>
    public int BatchSize = 8;

    // ---- stage 2: PPO
    /// <summary>PPO iterations (rollout + update); 0 skips stage 2. Default 10.</summary>
    public int PpoSteps = Defaults.PpoSteps;
    /// <summary>
    /// Rollouts per PPO iteration, spread over the labels in one turn that runs on across iterations (rollout i of
    /// iteration s goes to label (s·RolloutsPerStep + i) mod L; at least one per label). Default 16.
    /// </summary>
    public int RolloutsPerStep = 16;
    /// <summary>Optimisation epochs over each rollout batch. Default 4.</summary>
    public int PpoEpochs = 4;
    /// <summary>Rollouts per PPO gradient step. Default 8.</summary>
    public int MiniBatchSize = 8;
    /// <summary>Adam learning rate of stage 2 (prompts and value head). Default 0.003.</summary>
    public double PpoLearningRate = Defaults.PpoLearningRate;
    /// <summary>
    /// Trust region of each PPO iteration: the most approximate KL per token (½·mean log-ratio², against the policy
    /// that sampled the rollouts) the iteration's updates may reach. Past it, the last update is undone and the
    /// iteration ends early. Null turns the check off. Default 0.05, which the library's rate of 0.003 does not reach;
    /// it matters at high rates, where one iteration can otherwise turn a prompt into one that ends every sample.
    /// </summary>
    public double? MaxUpdateKl = Defaults.MaxUpdateKl;
    /// <summary>Policy ratio clip. Default 0.2.</summary>
    public double ClipRange = 0.2;
    /// <summary>Value clip. Default 0.2.</summary>
    public double ValueClipRange = 0.2;
    /// <summary>Value loss weight. Default 0.1.</summary>
    public double ValueCoefficient = 0.1;
    /// <summary>Discount. Default 1.</summary>
    public double Gamma = 1.0;
    /// <summary>GAE λ. Default 0.95.</summary>
    public double Lambda = 0.95;
    /// <summary>Initial KL coefficient β (per-token KL against the stage-1 prompt). Default 0.05. Must be > 0 while <see cref="TargetKl"/> is set (the adaptive controller only scales it).</summary>
    public double InitialKlCoefficient = 0.05;
    /// <summary>Target KL (nats per sample) of the adaptive controller; null keeps β fixed. Default 4.</summary>
    public double? TargetKl = 4.0;
    /// <summary>Horizon (samples) of the adaptive KL controller. Default 1000.</summary>
    public double KlHorizon = 1000;
    /// <summary>Gradient norm clip (both stages). Default 1.</summary>
    public double MaxGradientNorm = 1.0;
    /// <summary>Sampling temperature of rollouts and generation. Default 1.</summary>
    public double Temperature = 1.0;
    /// <summary>Most new tokens per sample; null takes the template's <see cref="TaskTemplate.MaxNewTokens"/>.</summary>
    public int? MaxNewTokens;

    // ---- reward
    /// <summary>
    /// The reward; null uses <see cref="RetriKTReward"/> over the teacher's <see cref="VerbalizerClassifier"/>. A
    /// <see cref="RetriKTReward"/> given here starts each Fit with an empty memory of recent samples.
    /// </summary>
    public IRewardFunction? Reward;
    /// <summary>Weights of the default reward.</summary>
    public RewardWeights RewardWeights = new();
    /// <summary>Calibrate the verbalizer classifier (contextual calibration). Default true.</summary>
    public bool CalibrateVerbalizer = true;

    // ---- run control
    /// <summary>Seed; null takes the MLContext seed (then 1).</summary>
    public int? Seed;
    /// <summary>
    /// Per-step metrics as CSV, or null. Rewritten atomically after every PPO iteration (and the stage-1 epochs beside
    /// it, as <c>*.stage1.csv</c>), so a cancelled or failed run keeps the metrics of what it did.
    /// </summary>
    public string? MetricsCsvPath;
    /// <summary>Progress callback (for console progress bars).</summary>
    public IProgress<TrainingProgress>? Progress;
    /// <summary>Cancels training between steps.</summary>
    public CancellationToken CancellationToken;

    /// <summary>
    /// A copy that reports to <paramref name="progress"/> and stops on <paramref name="cancellation"/> where these options
    /// set neither: a component that fits the prompts as one of its stages passes its own on (the options it was given stay as they are).
    /// </summary>
    internal SoftPromptPpoOptions WithRunControlOf(IProgress<TrainingProgress>? progress, CancellationToken cancellation)
    {
        var copy = Copy();
        copy.Progress ??= progress;
        if (!copy.CancellationToken.CanBeCanceled) copy.CancellationToken = cancellation;
        return copy;
    }

    /// <summary>
    /// A copy of every setting, <see cref="Labels"/> copied too (a caller's list may change); the teacher, template,
    /// reward and reward weights are shared (the template and the weights are immutable records).
    /// </summary>
    internal SoftPromptPpoOptions Copy()
    {
        var copy = (SoftPromptPpoOptions)MemberwiseClone();
        copy.Labels = Labels?.ToArray();
        return copy;
    }

    /// <summary>The labels in training order: <see cref="Labels"/>, else the template's verbalizer order.</summary>
    internal IReadOnlyList<string> TaskLabels => Labels ?? Template?.Verbalizer?.Keys.ToList() ?? [];

    /// <summary>
    /// Checks every option before any training (the trainer's constructor calls it): each refusal names the option and
    /// the value found. Comparisons are written so that NaN fails them, and rates, coefficients and limits must be finite.
    /// </summary>
    internal void Validate()
    {
        if (Template is null) throw new ArgumentException("SoftPromptPpoOptions.Template is required (for example TaskTemplates.Sst2).");
        if (string.IsNullOrWhiteSpace(TeacherPath)) throw new ArgumentException("SoftPromptPpoOptions.TeacherPath is required: model.zip references the teacher by path and content hash.");
        if (string.IsNullOrWhiteSpace(LabelColumnName)) throw new ArgumentException("SoftPromptPpoOptions.LabelColumnName is required (default \"Label\").");
        ValidateLabels(Labels);
        if (InitText is null) throw new ArgumentException("SoftPromptPpoOptions.InitText must not be null (\"\" for none).");
        if (!Enum.IsDefined(Init)) throw new ArgumentOutOfRangeException(nameof(Init), $"Init must be one of {string.Join(", ", Enum.GetNames<SoftPromptInit>())}, found {(int)Init}.");
        ValidateSettings();
        var labels = TaskLabels;
        // One label trained (its fidelity, a softmax over one label, is always 1) and saved, and only loading the saved
        // model refused it ("label count 1 is out of range"): the knowledge store needs two labels too.
        if (labels.Count < 2)
            throw new ArgumentException(Labels is null
                ? $"Template '{Template.Name}' has {labels.Count} label(s) in its verbalizer [{string.Join(", ", labels)}]; soft prompt tuning needs at least 2 (the fidelity reward tells labels apart)."
                : $"SoftPromptPpoOptions.Labels has {labels.Count} label ('{labels[0]}'); soft prompt tuning needs at least 2 (the fidelity reward tells labels apart).");
        // Each iteration updates the prompts of the labels it sampled: with fewer rollouts than labels some labels sit out
        // every iteration (two labels, one rollout: 'sad' sits out the first, 'happy' the second), and no report says so.
        if (PpoSteps > 0 && RolloutsPerStep < labels.Count)
        {
            var missing = labels.Skip(RolloutsPerStep).Select(l => $"'{l}'").ToList();
            throw new ArgumentOutOfRangeException(nameof(RolloutsPerStep),
                $"RolloutsPerStep must be at least the number of labels ({labels.Count}), or {(missing.Count == 1 ? "label" : "labels")} {string.Join(", ", missing)} {(missing.Count == 1 ? "gets" : "get")} no rollout in the first iteration, found {RolloutsPerStep}.");
        }
    }

    /// <summary>
    /// The settings' own ranges, without the task and the teacher: what <c>RetriKTPipelineOptions.Validate</c> checks
    /// before the pipeline has a task.
    /// </summary>
    internal void ValidateSettings()
    {
        // Sizes and counts.
        Positive(PromptTokens, nameof(PromptTokens));
        AtLeastZero(TaskPromptTokens, nameof(TaskPromptTokens));
        AtLeastZero(SupervisedEpochs, nameof(SupervisedEpochs));
        AtLeastZero(PpoSteps, nameof(PpoSteps));
        Positive(BatchSize, nameof(BatchSize));
        Positive(RolloutsPerStep, nameof(RolloutsPerStep));
        Positive(PpoEpochs, nameof(PpoEpochs));
        Positive(MiniBatchSize, nameof(MiniBatchSize));
        // The template's own rule for its MaxNewTokens (TaskTemplate.Validate), applied to the override.
        if (MaxNewTokens is int maxNew && maxNew < TaskTemplate.MinimumMaxNewTokens)
            throw new ArgumentOutOfRangeException(nameof(MaxNewTokens),
                $"MaxNewTokens must be at least {TaskTemplate.MinimumMaxNewTokens} (the template's own MaxNewTokens must be too), or null to take the template's, found {maxNew}.");

        // Rates, limits and coefficients.
        PositiveFinite(SupervisedLearningRate, nameof(SupervisedLearningRate));
        PositiveFinite(PpoLearningRate, nameof(PpoLearningRate));
        PositiveFinite(Temperature, nameof(Temperature));
        if (MaxUpdateKl is double maxKl && !(maxKl > 0 && double.IsFinite(maxKl)))
            throw new ArgumentOutOfRangeException(nameof(MaxUpdateKl), $"MaxUpdateKl must be positive and finite (or null to turn the trust region off), found {Show(maxKl)}.");
        PositiveFinite(ClipRange, nameof(ClipRange));
        PositiveFinite(ValueClipRange, nameof(ValueClipRange));
        AtLeastZeroFinite(ValueCoefficient, nameof(ValueCoefficient));
        UnitInterval(Gamma, nameof(Gamma));
        UnitInterval(Lambda, nameof(Lambda));
        AtLeastZeroFinite(InitialKlCoefficient, nameof(InitialKlCoefficient));
        if (TargetKl is double target && !(target > 0 && double.IsFinite(target)))
            throw new ArgumentOutOfRangeException(nameof(TargetKl), $"TargetKl must be positive and finite (or null to keep the KL coefficient fixed), found {Show(target)}.");
        // The adaptive controller multiplies β (β ← β·(1 + e·n/horizon)): from 0 it stays 0 whatever the KL, so a target
        // would be silently ignored.
        if (TargetKl is double targetSet && InitialKlCoefficient == 0)
            throw new ArgumentOutOfRangeException(nameof(InitialKlCoefficient),
                $"InitialKlCoefficient must be > 0 while TargetKl is set (the adaptive controller multiplies it, so 0 stays 0), or TargetKl null for a fixed coefficient; found 0 with TargetKl {Show(targetSet)}.");
        PositiveFinite(KlHorizon, nameof(KlHorizon));
        PositiveFinite(MaxGradientNorm, nameof(MaxGradientNorm));

        // The default reward's weights (null takes the defaults, as RetriKTReward does).
        RewardWeights?.Validate();
    }

    private static void ValidateLabels(IReadOnlyList<string>? labels)
    {
        if (labels is null) return;
        if (labels.Count == 0)
            throw new ArgumentException("SoftPromptPpoOptions.Labels is empty: give the labels in training order, or null to take the order of the template's verbalizer.");
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < labels.Count; i++)
        {
            if (string.IsNullOrEmpty(labels[i])) throw new ArgumentException($"SoftPromptPpoOptions.Labels: label {i} is null or empty.");
            if (!seen.Add(labels[i])) throw new ArgumentException($"SoftPromptPpoOptions.Labels: label '{labels[i]}' appears twice.");
        }
    }

    private static void Positive(int value, string name)
    {
        if (value <= 0) throw new ArgumentOutOfRangeException(name, $"{name} must be positive, found {value}.");
    }

    internal static void AtLeastZero(int value, string name)
    {
        if (value < 0) throw new ArgumentOutOfRangeException(name, $"{name} must be >= 0, found {value}.");
    }

    private static void PositiveFinite(double value, string name)
    {
        if (!(value > 0 && double.IsFinite(value))) throw new ArgumentOutOfRangeException(name, $"{name} must be positive and finite, found {Show(value)}.");
    }

    internal static void AtLeastZeroFinite(double value, string name)
    {
        if (!(value >= 0 && double.IsFinite(value))) throw new ArgumentOutOfRangeException(name, $"{name} must be >= 0 and finite, found {Show(value)}.");
    }

    private static void UnitInterval(double value, string name)
    {
        if (!(value >= 0 && value <= 1)) throw new ArgumentOutOfRangeException(name, $"{name} must be in [0, 1], found {Show(value)}.");
    }

    /// <summary>A value as the messages show it, whatever the culture: 0.5, NaN, Infinity, -Infinity.</summary>
    private static string Show(double value) => value.ToString(CultureInfo.InvariantCulture);
}
