using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;
using TorchSharp;
using static RetriKT.MLNet.Tests.SoftPrompt.SoftPromptPpoTrainerTests;

namespace RetriKT.MLNet.Tests.SoftPrompt;

/// <summary>
/// SoftPromptPpoOptions are refused in the trainer's constructor (before the teacher loads and stage 1 runs), one
/// option per message; the estimator's schema check refuses what Fit refuses; PPO leaves no tensor behind.
/// </summary>
public class SoftPromptPpoOptionsTests
{
    private static SoftPromptPpoOptions Valid() => new() { TeacherPath = "/nonexistent/teacher.bin", Template = StoryMood };

    private static SoftPromptPpoTrainer Trainer(SoftPromptPpoOptions options) => new MLContext().RetriKT().SoftPromptPpoTrainer(options);

    [Theory]
    [InlineData(nameof(SoftPromptPpoOptions.MaxGradientNorm), 0.0, "MaxGradientNorm must be positive and finite, found 0.")]
    [InlineData(nameof(SoftPromptPpoOptions.MaxGradientNorm), -1.0, "MaxGradientNorm must be positive and finite, found -1.")]
    [InlineData(nameof(SoftPromptPpoOptions.MaxGradientNorm), double.NaN, "MaxGradientNorm must be positive and finite, found NaN.")]
    [InlineData(nameof(SoftPromptPpoOptions.MaxGradientNorm), double.PositiveInfinity, "MaxGradientNorm must be positive and finite, found Infinity.")]
    [InlineData(nameof(SoftPromptPpoOptions.Gamma), double.NaN, "Gamma must be in [0, 1], found NaN.")]
    [InlineData(nameof(SoftPromptPpoOptions.Gamma), -0.1, "Gamma must be in [0, 1], found -0.1.")]
    [InlineData(nameof(SoftPromptPpoOptions.Gamma), 1.5, "Gamma must be in [0, 1], found 1.5.")]
    [InlineData(nameof(SoftPromptPpoOptions.Lambda), 5.0, "Lambda must be in [0, 1], found 5.")]
    [InlineData(nameof(SoftPromptPpoOptions.Lambda), double.NaN, "Lambda must be in [0, 1], found NaN.")]
    [InlineData(nameof(SoftPromptPpoOptions.ValueCoefficient), double.NaN, "ValueCoefficient must be >= 0 and finite, found NaN.")]
    [InlineData(nameof(SoftPromptPpoOptions.ValueCoefficient), -0.5, "ValueCoefficient must be >= 0 and finite, found -0.5.")]
    [InlineData(nameof(SoftPromptPpoOptions.ValueCoefficient), double.PositiveInfinity, "ValueCoefficient must be >= 0 and finite, found Infinity.")]
    [InlineData(nameof(SoftPromptPpoOptions.InitialKlCoefficient), -1.0, "InitialKlCoefficient must be >= 0 and finite, found -1.")]
    [InlineData(nameof(SoftPromptPpoOptions.InitialKlCoefficient), double.NaN, "InitialKlCoefficient must be >= 0 and finite, found NaN.")]
    [InlineData(nameof(SoftPromptPpoOptions.TargetKl), 0.0, "TargetKl must be positive and finite (or null to keep the KL coefficient fixed), found 0.")]
    [InlineData(nameof(SoftPromptPpoOptions.TargetKl), double.NaN, "TargetKl must be positive and finite (or null to keep the KL coefficient fixed), found NaN.")]
    [InlineData(nameof(SoftPromptPpoOptions.TargetKl), double.PositiveInfinity, "TargetKl must be positive and finite (or null to keep the KL coefficient fixed), found Infinity.")]
    [InlineData(nameof(SoftPromptPpoOptions.KlHorizon), 0.0, "KlHorizon must be positive and finite, found 0.")]
    [InlineData(nameof(SoftPromptPpoOptions.KlHorizon), double.NaN, "KlHorizon must be positive and finite, found NaN.")]
    [InlineData(nameof(SoftPromptPpoOptions.MaxNewTokens), 0, "MaxNewTokens must be at least 2 (the template's own MaxNewTokens must be too), or null to take the template's, found 0.")]
    [InlineData(nameof(SoftPromptPpoOptions.MaxNewTokens), 1, "MaxNewTokens must be at least 2 (the template's own MaxNewTokens must be too), or null to take the template's, found 1.")]
    [InlineData(nameof(SoftPromptPpoOptions.MaxNewTokens), -5, "MaxNewTokens must be at least 2 (the template's own MaxNewTokens must be too), or null to take the template's, found -5.")]
    [InlineData(nameof(SoftPromptPpoOptions.ClipRange), double.NaN, "ClipRange must be positive and finite, found NaN.")]
    [InlineData(nameof(SoftPromptPpoOptions.ClipRange), 0.0, "ClipRange must be positive and finite, found 0.")]
    [InlineData(nameof(SoftPromptPpoOptions.ValueClipRange), double.NaN, "ValueClipRange must be positive and finite, found NaN.")]
    [InlineData(nameof(SoftPromptPpoOptions.ValueClipRange), -0.2, "ValueClipRange must be positive and finite, found -0.2.")]
    [InlineData(nameof(SoftPromptPpoOptions.SupervisedLearningRate), double.PositiveInfinity, "SupervisedLearningRate must be positive and finite, found Infinity.")]
    [InlineData(nameof(SoftPromptPpoOptions.SupervisedLearningRate), 0.0, "SupervisedLearningRate must be positive and finite, found 0.")]
    [InlineData(nameof(SoftPromptPpoOptions.PpoLearningRate), double.NaN, "PpoLearningRate must be positive and finite, found NaN.")]
    [InlineData(nameof(SoftPromptPpoOptions.PpoLearningRate), -0.003, "PpoLearningRate must be positive and finite, found -0.003.")]
    [InlineData(nameof(SoftPromptPpoOptions.Temperature), double.NaN, "Temperature must be positive and finite, found NaN.")]
    [InlineData(nameof(SoftPromptPpoOptions.Temperature), double.PositiveInfinity, "Temperature must be positive and finite, found Infinity.")]
    [InlineData(nameof(SoftPromptPpoOptions.MaxUpdateKl), double.NaN, "MaxUpdateKl must be positive and finite (or null to turn the trust region off), found NaN.")]
    [InlineData(nameof(SoftPromptPpoOptions.MaxUpdateKl), 0.0, "MaxUpdateKl must be positive and finite (or null to turn the trust region off), found 0.")]
    [InlineData(nameof(SoftPromptPpoOptions.PromptTokens), 0, "PromptTokens must be positive, found 0.")]
    [InlineData(nameof(SoftPromptPpoOptions.TaskPromptTokens), -1, "TaskPromptTokens must be >= 0, found -1.")]
    [InlineData(nameof(SoftPromptPpoOptions.SupervisedEpochs), -1, "SupervisedEpochs must be >= 0, found -1.")]
    [InlineData(nameof(SoftPromptPpoOptions.PpoSteps), -1, "PpoSteps must be >= 0, found -1.")]
    [InlineData(nameof(SoftPromptPpoOptions.BatchSize), 0, "BatchSize must be positive, found 0.")]
    [InlineData(nameof(SoftPromptPpoOptions.RolloutsPerStep), 0, "RolloutsPerStep must be positive, found 0.")]
    [InlineData(nameof(SoftPromptPpoOptions.PpoEpochs), 0, "PpoEpochs must be positive, found 0.")]
    [InlineData(nameof(SoftPromptPpoOptions.MiniBatchSize), -3, "MiniBatchSize must be positive, found -3.")]
    public void ABadNumericOptionIsRefusedAtConstructionNamingTheOptionAndTheValue(string option, object value, string message)
    {
        var options = Valid();
        typeof(SoftPromptPpoOptions).GetField(option)!.SetValue(options, value);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Trainer(options));
        Assert.Equal(option, e.ParamName);
        Assert.Equal($"{message} (Parameter '{option}')", e.Message);
    }

    [Theory]
    [InlineData(nameof(RewardWeights.Fidelity), double.NaN, "RewardWeights.Fidelity must be >= 0 and finite, found NaN.")]
    [InlineData(nameof(RewardWeights.Diversity), -1.0, "RewardWeights.Diversity must be >= 0 and finite, found -1.")]
    [InlineData(nameof(RewardWeights.Repetition), double.PositiveInfinity, "RewardWeights.Repetition must be >= 0 and finite, found Infinity.")]
    [InlineData(nameof(RewardWeights.Length), double.NegativeInfinity, "RewardWeights.Length must be >= 0 and finite, found -Infinity.")]
    [InlineData(nameof(RewardWeights.Memory), -1, "RewardWeights.Memory must be >= 0, found -1.")]
    public void ABadRewardWeightIsRefusedAtConstruction(string weight, object value, string message)
    {
        var weights = new RewardWeights();
        typeof(RewardWeights).GetProperty(weight)!.SetValue(weights, value);
        var options = Valid();
        options.RewardWeights = weights;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Trainer(options));
        Assert.Equal($"{message} (Parameter 'RewardWeights.{weight}')", e.Message);
    }

    /// <summary>
    /// A RetriKTReward built with weights of its own, given in <see cref="SoftPromptPpoOptions.Reward"/>, bypassed the
    /// options' checks: a negative Memory failed at the first PPO step, after stage 1, with "Queue empty.".
    /// </summary>
    [Theory]
    [InlineData(nameof(RewardWeights.Fidelity), double.NaN, "RewardWeights.Fidelity must be >= 0 and finite, found NaN.")]
    [InlineData(nameof(RewardWeights.Length), -0.5, "RewardWeights.Length must be >= 0 and finite, found -0.5.")]
    [InlineData(nameof(RewardWeights.Memory), -1, "RewardWeights.Memory must be >= 0, found -1.")]
    public void ABadRewardWeightIsRefusedWhenARetriKTRewardIsBuiltWithIt(string weight, object value, string message)
    {
        var weights = new RewardWeights();
        typeof(RewardWeights).GetProperty(weight)!.SetValue(weights, value);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new RetriKTReward(new EvenScorer(), weights));
        Assert.Equal($"{message} (Parameter 'RewardWeights.{weight}')", e.Message);
    }

    private sealed class EvenScorer : ILabelScorer
    {
        public float[][] Probabilities(IReadOnlyList<(string Text, string? Text2)> samples) => samples.Select(_ => new[] { 0.5f, 0.5f }).ToArray();
    }

    [Fact]
    public void TheDefaultsAndTheBoundsAreAccepted()
    {
        Trainer(Valid());
        var edges = Valid();
        (edges.Gamma, edges.Lambda, edges.ValueCoefficient, edges.InitialKlCoefficient) = (0, 1, 0, 0);
        (edges.MaxNewTokens, edges.TargetKl, edges.MaxUpdateKl, edges.TaskPromptTokens, edges.SupervisedEpochs, edges.PpoSteps) = (2, null, null, 0, 0, 0);
        edges.RewardWeights = new RewardWeights { Diversity = 0, Memory = 0 };
        Trainer(edges);
        (edges.Gamma, edges.Lambda) = (1, 0);
        Trainer(edges);
    }

    [Fact]
    public void LabelsMustBeDistinctAndNonEmpty()
    {
        string Refused(params string[] labels)
        {
            var options = Valid();
            options.Labels = labels;
            return Assert.Throws<ArgumentException>(() => Trainer(options)).Message;
        }
        Assert.Equal("SoftPromptPpoOptions.Labels: label 'happy' appears twice.", Refused("happy", "sad", "happy"));
        Assert.Equal("SoftPromptPpoOptions.Labels is empty: give the labels in training order, or null to take the order of the template's verbalizer.", Refused());
        Assert.Equal("SoftPromptPpoOptions.Labels: label 1 is null or empty.", Refused("happy", ""));
        // Ordinal, as the label lookup: 'Happy' is another label (the template then refuses it for having no verbalizer word).
        var options = Valid();
        options.Labels = ["happy", "Happy"];
        Trainer(options);
    }

    /// <summary>
    /// One label trained (its fidelity, a softmax over one label, was always 1) and saved, and only loading the saved
    /// model refused it: "model.zip: soft prompt label count 1 is out of range."
    /// </summary>
    [Fact]
    public void OneLabelIsRefusedAtConstructionNotWhenItsModelLoads()
    {
        var options = Valid();
        options.Labels = ["happy"];
        Assert.Equal("SoftPromptPpoOptions.Labels has 1 label ('happy'); soft prompt tuning needs at least 2 (the fidelity reward tells labels apart).",
            Assert.Throws<ArgumentException>(() => Trainer(options)).Message);
        var oneWord = Valid();
        oneWord.Template = StoryMood with { Verbalizer = new Dictionary<string, string> { ["happy"] = " happy" } };
        Assert.Equal("Template 'StoryMood' has 1 label(s) in its verbalizer [happy]; soft prompt tuning needs at least 2 (the fidelity reward tells labels apart).",
            Assert.Throws<ArgumentException>(() => Trainer(oneWord)).Message);
    }

    [Fact]
    public void ANullInitTextIsRefusedAtConstruction()
    {
        var options = Valid();
        options.InitText = null!;
        Assert.Equal("SoftPromptPpoOptions.InitText must not be null (\"\" for none).", Assert.Throws<ArgumentException>(() => Trainer(options)).Message);
    }

    [Fact]
    public void GetOutputSchemaRefusesTheLabelTypesFitRefusesWithTheSameMessage()
    {
        var ml = new MLContext();
        var trainer = Trainer(Valid());
        void SameRefusal(IDataView data, string found)
        {
            var atFit = Assert.Throws<ArgumentOutOfRangeException>(() => trainer.Fit(data));
            var atSchema = Assert.Throws<ArgumentOutOfRangeException>(() => trainer.GetOutputSchema(SchemaShapes.Of(data.Schema)));
            Assert.Equal($"Label column 'Label' must be String or a key type with text key values, found {found}.", atFit.Message);
            Assert.Equal(atFit.Message, atSchema.Message);
        }
        SameRefusal(ml.Data.LoadFromEnumerable(new[] { new { Text = "a b c", Label = 1 } }), "Int32");
        SameRefusal(ml.Data.LoadFromEnumerable(new[] { new { Text = "a b c", Label = 1f } }), "Single");
        SameRefusal(ml.Data.LoadFromEnumerable(new[] { new { Text = "a b c", Label = true } }), "Boolean");
        var numbers = ml.Data.LoadFromEnumerable(new[] { new { Text = "a b c", Label = 1 }, new { Text = "d e f", Label = 2 } });
        SameRefusal(ml.Transforms.Conversion.MapValueToKey("Label").Fit(numbers).Transform(numbers), "Key<UInt32> without text key values");
        SameRefusal(ml.Data.LoadFromEnumerable(new[] { new VectorLabel { Text = "a b c", Label = ["happy", "sad"] } }), "Vector<String>");

        // What Fit takes, the shape takes: String, and a key with text key values.
        var words = StoryData(ml);
        Assert.Contains(trainer.GetOutputSchema(SchemaShapes.Of(words.Schema)), c => c.Name == "GeneratedText");
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(words).Transform(words);
        Assert.Contains(trainer.GetOutputSchema(SchemaShapes.Of(keyed.Schema)), c => c.Name == "GeneratedText");
    }

    private sealed class VectorLabel
    {
        public string Text { get; set; } = "";
        [VectorType(2)]
        public string[] Label { get; set; } = [];
    }

    [SharedDataFact]
    public void PpoLeavesNoTensorAliveAfterFitWhetherItSucceedsOrIsCancelled()
    {
        // Counted on this thread by TorchSharp (created minus disposed, inside and outside dispose scopes). The teacher
        // is loaded once, outside the counts; a first Fit warms its caches up.
        using var teacher = TeacherModel.Load(Stories260K);
        var mlContext = new MLContext(seed: 3);
        var data = StoryData(mlContext);
        SoftPromptPpoOptions Options(int ppoSteps, IProgress<TrainingProgress>? progress = null, CancellationToken cancel = default) => new()
        {
            TeacherPath = Stories260K, Teacher = teacher, Template = StoryMood, SupervisedEpochs = 1, PromptTokens = 2,
            PpoSteps = ppoSteps, RolloutsPerStep = 4, MiniBatchSize = 4, PpoEpochs = 1, MaxNewTokens = 6, Progress = progress, CancellationToken = cancel,
        };
        long Live() => DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        long LeftByFit(SoftPromptPpoOptions options)
        {
            long before = Live();
            using (mlContext.RetriKT().SoftPromptPpoTrainer(options).Fit(data)) { }
            return Live() - before;
        }
        LeftByFit(Options(1));
        long afterOneStep = LeftByFit(Options(1)), afterFourSteps = LeftByFit(Options(4));
        Assert.True((afterOneStep, afterFourSteps) == (0, 0), $"tensors left alive by a Fit: {afterOneStep} with 1 PPO step, {afterFourSteps} with 4");

        // Cancelled during PPO (after its first step): the prompts, the value head and the frozen reference go too.
        using var cancellation = new CancellationTokenSource();
        var cancelAtFirstPpoStep = new SyncProgress(p => { if (p.Stage == "PPO") cancellation.Cancel(); });
        long start = Live();
        Assert.ThrowsAny<OperationCanceledException>(() => mlContext.RetriKT().SoftPromptPpoTrainer(Options(3, cancelAtFirstPpoStep, cancellation.Token)).Fit(data));
        Assert.True(cancellation.IsCancellationRequested);
        Assert.Equal(0, Live() - start);
    }
}
