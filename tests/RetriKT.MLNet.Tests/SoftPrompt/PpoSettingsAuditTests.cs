using Microsoft.ML;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;
using static RetriKT.MLNet.Tests.SoftPrompt.SoftPromptPpoTrainerTests;

namespace RetriKT.MLNet.Tests.SoftPrompt;

/// <summary>
/// PPO settings that used to run and report normal-looking numbers while part of PPO silently did nothing, and the
/// default reward's contract for too-short samples.
/// </summary>
public class PpoSettingsAuditTests
{
    private static SoftPromptPpoOptions Valid() => new() { TeacherPath = "/nonexistent/teacher.bin", Template = StoryMood };

    private static SoftPromptPpoTrainer Trainer(SoftPromptPpoOptions options) => new MLContext().RetriKT().SoftPromptPpoTrainer(options);

    [Fact]
    public void AnAdaptiveKlControllerStartingFromZeroIsRefused()
    {
        // β ← β·(1 + e·n/horizon) keeps 0 at 0 whatever the KL: the "adaptive" penalty would never switch on.
        var options = Valid();
        options.InitialKlCoefficient = 0;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Trainer(options));
        Assert.Equal(nameof(SoftPromptPpoOptions.InitialKlCoefficient), e.ParamName);
        Assert.StartsWith("InitialKlCoefficient must be > 0 while TargetKl is set (the adaptive controller multiplies it, so 0 stays 0), or TargetKl null for a fixed coefficient; found 0 with TargetKl 4.", e.Message);
        options.TargetKl = null; // a fixed β of 0 (no KL penalty) is a choice, and allowed
        Trainer(options);
    }

    [Fact]
    public void FewerRolloutsPerStepThanLabelsIsRefused()
    {
        // With fewer rollouts than labels some labels sit out every iteration (before the turn ran on across iterations,
        // the last labels never got one: their prompts left PPO as stage 1 left them, and the report looked like any other).
        var options = Valid();
        options.RolloutsPerStep = 1;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Trainer(options));
        Assert.Equal(nameof(SoftPromptPpoOptions.RolloutsPerStep), e.ParamName);
        Assert.StartsWith("RolloutsPerStep must be at least the number of labels (2), or label 'sad' gets no rollout in the first iteration, found 1.", e.Message);
        options.PpoSteps = 0;
        Trainer(options); // no PPO, no rollouts
    }

    [Fact]
    public void ASampleTooShortForTheStoreEarnsExactlyMinusTheLengthWeightEvenWhenItRepeatsItself()
    {
        // MinWords 6: "la la la la la" is 5 words (too short) with repeated trigrams; the contract is −w_l, nothing else.
        var reward = new RetriKTReward(new ConstantScorer(), minWords: 6);
        var scores = reward.Score([new RolloutSample(0, "la la la la la", null, "la la la la la", 5, Finished: true)]);
        Assert.Equal(-0.5, scores[0].Total, 9);
        Assert.Equal(0.5, scores[0].Penalty, 9);
    }

    /// <summary>
    /// The default reward took its label scorer's rows as they came: a scorer of the user's that returned scores, not
    /// probabilities ([3, -1]), trained PPO on a "fidelity" of 3 without a word, and one that returned one value per sample
    /// failed with a bare IndexOutOfRangeException. Each is now named, with the sample and the values.
    /// </summary>
    [Fact]
    public void TheDefaultRewardRefusesALabelScorerThatDoesNotReturnOneProbabilityPerLabel()
    {
        RolloutSample Sample(int label) => new(label, "Lily played in the sun all day.", null, "Lily played in the sun all day.", 8, Finished: true);
        string Refusal(Func<int, float[]> row, int samples = 2) => Assert.Throws<InvalidOperationException>(() =>
            new RetriKTReward(new RowsScorer(row)).Score(Enumerable.Range(0, samples).Select(i => Sample(i % 2)).ToList())).Message;

        Assert.Equal("RetriKTReward: the label scorer gave sample 0 the probabilities [3, -1]: soft label holds -1; probabilities must be finite and >= 0.",
            Refusal(_ => [3f, -1f]));
        Assert.Equal("RetriKTReward: the label scorer gave sample 1 the probabilities [0.5, 0.7]: soft label sums to 1.2, expected 1.",
            Refusal(i => i == 0 ? [0.5f, 0.5f] : [0.5f, 0.7f]));
        Assert.Equal("RetriKTReward: the label scorer gave sample 0 1 probability; expected one per label, at least 2.",
            Refusal(_ => [1f]));
        Assert.Equal("RetriKTReward: the label scorer gave sample 1 3 probabilities and sample 0 2; expected one per label for every sample.",
            Refusal(i => i == 0 ? [0.5f, 0.5f] : [0.2f, 0.3f, 0.5f]));
        Assert.Equal("RetriKTReward: sample 2 was generated for label index 2, but the label scorer gave it 2 probabilities; expected one per label.",
            Assert.Throws<InvalidOperationException>(() => new RetriKTReward(new RowsScorer(_ => [0.5f, 0.5f])).Score([Sample(0), Sample(1), Sample(2)])).Message);
        Assert.Equal("RetriKTReward: the label scorer returned 1 probability rows for 2 samples; expected one per sample.",
            Assert.Throws<InvalidOperationException>(() => new RetriKTReward(new FirstRowOnlyScorer()).Score([Sample(0), Sample(1)])).Message);
    }

    private sealed class RowsScorer(Func<int, float[]> row) : ILabelScorer
    {
        public float[][] Probabilities(IReadOnlyList<(string Text, string? Text2)> samples) => samples.Select((_, i) => row(i)).ToArray();
    }

    private sealed class FirstRowOnlyScorer : ILabelScorer
    {
        public float[][] Probabilities(IReadOnlyList<(string Text, string? Text2)> samples) => [[0.5f, 0.5f]];
    }

    private sealed class ConstantScorer : ILabelScorer
    {
        public float[][] Probabilities(IReadOnlyList<(string Text, string? Text2)> samples) => samples.Select(_ => new[] { 0.9f, 0.1f }).ToArray();
    }
}

public class PpoNonFiniteRewardTests
{
    private sealed class NaNReward : IRewardFunction
    {
        public IReadOnlyList<RewardBreakdown> Score(IReadOnlyList<RolloutSample> samples)
            => samples.Select((_, i) => new RewardBreakdown(i == 2 ? double.NaN : 0.5, 0, 0, 0)).ToList();
    }

    [Infrastructure.SharedDataFact]
    public void ANonFiniteRewardStopsTrainingInsteadOfTurningThePromptsIntoNaN()
    {
        var mlContext = new MLContext(seed: 3);
        var e = Assert.Throws<InvalidOperationException>(() => mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 0, PromptTokens = 2,
            PpoSteps = 2, RolloutsPerStep = 4, MiniBatchSize = 4, PpoEpochs = 1, MaxNewTokens = 4, Reward = new NaNReward(),
        }).Fit(StoryData(mlContext)).Dispose());
        Assert.Equal("PPO step 1: the reward function returned NaN for rollout 2 (label 'happy'); expected a finite total.", e.Message);
    }

    private sealed class HugeReward : IRewardFunction
    {
        public IReadOnlyList<RewardBreakdown> Score(IReadOnlyList<RolloutSample> samples)
            => samples.Select((_, i) => new RewardBreakdown(i == 1 ? 1e39 : 0.5, 0, 0, 0)).ToList();
    }

    /// <summary>
    /// A total past float32's range is finite as a double and passed the check, then became infinity in the advantages:
    /// the last PPO step returned prompts of NaN without a word (an earlier one failed in torch's sampler at the next
    /// rollout, with a native stack trace).
    /// </summary>
    [Infrastructure.SharedDataFact]
    public void ARewardPastFloatRangeStopsTrainingInsteadOfTurningThePromptsIntoNaN()
    {
        var mlContext = new MLContext(seed: 3);
        var e = Assert.Throws<InvalidOperationException>(() => mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 0, PromptTokens = 2,
            PpoSteps = 1, RolloutsPerStep = 4, MiniBatchSize = 4, PpoEpochs = 1, MaxNewTokens = 4, Reward = new HugeReward(),
        }).Fit(StoryData(mlContext)).Dispose());
        Assert.Equal("PPO step 1: the reward function returned 1E+39 for rollout 1 (label 'sad'); expected a finite total within float32's range (±3.4E+38), " +
                     "in which the advantages are computed.", e.Message);
    }

    private sealed class ShortReward : IRewardFunction
    {
        public IReadOnlyList<RewardBreakdown> Score(IReadOnlyList<RolloutSample> samples)
            => samples.Skip(1).Select(_ => new RewardBreakdown(0.5, 0, 0, 0)).ToList();
    }

    [Infrastructure.SharedDataFact]
    public void ARewardWithOneBreakdownTooFewIsNamedAsSuch()
    {
        var mlContext = new MLContext(seed: 3);
        var e = Assert.Throws<InvalidOperationException>(() => mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 0, PromptTokens = 2,
            PpoSteps = 1, RolloutsPerStep = 4, MiniBatchSize = 4, PpoEpochs = 1, MaxNewTokens = 4, Reward = new ShortReward(),
        }).Fit(StoryData(mlContext)).Dispose());
        Assert.Equal("PPO step 1: the reward function returned 3 breakdowns for 4 rollouts; expected one per rollout.", e.Message);
    }
}

/// <summary>
/// Rollouts are spread over the labels in one turn that runs on from step to step. Rollout i of every step used to go
/// to label i mod L, so when RolloutsPerStep is no multiple of the label count the first labels got one more rollout
/// every step (64 rollouts on a 3-label task: 22, 21, 21, for the whole run).
/// </summary>
public class PpoRolloutTurnTests
{
    private sealed class RecordingReward : IRewardFunction
    {
        public List<int[]> Labels { get; } = [];

        public IReadOnlyList<RewardBreakdown> Score(IReadOnlyList<RolloutSample> samples)
        {
            Labels.Add(samples.Select(s => s.Label).ToArray());
            return samples.Select(_ => new RewardBreakdown(0.5, 0, 0, 0)).ToList();
        }
    }

    [Infrastructure.SharedDataFact]
    public void OnThreeLabelsFourRolloutsAStepGiveEachLabelFourInThreeSteps()
    {
        var mlContext = new MLContext(seed: 3);
        var template = StoryMood with { Verbalizer = new Dictionary<string, string> { ["happy"] = " happy", ["sad"] = " sad", ["calm"] = " calm" } };
        var data = mlContext.Data.LoadFromEnumerable(new[]
        {
            new TextPairRow { Text = "Lily was very happy. She played with her ball in the sun.", Label = "happy" },
            new TextPairRow { Text = "Ben was sad. His toy broke and he cried.", Label = "sad" },
            new TextPairRow { Text = "The cat sat by the window and looked at the rain.", Label = "calm" },
        });
        var reward = new RecordingReward();
        mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = Stories260K, Template = template, Labels = ["happy", "sad", "calm"], SupervisedEpochs = 0, PromptTokens = 2,
            PpoSteps = 3, RolloutsPerStep = 4, MiniBatchSize = 4, PpoEpochs = 1, MaxNewTokens = 4, Reward = reward,
        }).Fit(data).Dispose();

        Assert.Equal([[0, 1, 2, 0], [1, 2, 0, 1], [2, 0, 1, 2]], reward.Labels);
        Assert.All(Enumerable.Range(0, 3), l => Assert.Equal(4, reward.Labels.SelectMany(x => x).Count(x => x == l)));
    }
}
