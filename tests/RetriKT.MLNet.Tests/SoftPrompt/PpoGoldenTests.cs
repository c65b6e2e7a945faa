using System.Globalization;
using Microsoft.ML;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.Infrastructure;
using static RetriKT.MLNet.Tests.SoftPrompt.SoftPromptPpoTrainerTests;

namespace RetriKT.MLNet.Tests.SoftPrompt;

/// <summary>Runs alone: PPO seeds torch's process-wide generator, which tests running in parallel would also draw from.</summary>
[CollectionDefinition(nameof(PpoGoldenTests), DisableParallelization = true)]
public sealed class PpoGoldenCollection;

/// <summary>
/// Same seed, same PPO run as the reference code: the goldens below were captured from it (first from the code before
/// the decode rework, commit 29aa836; recaptured when rollout, minibatch-order and generation seeds came to be derived
/// by SeedMixer.Derive), so a speed-up that changes what is sampled or learned fails here, naming the first value that moved.
/// </summary>
[Collection(nameof(PpoGoldenTests))]
public class PpoGoldenTests
{
    // Per PPO step: generated tokens, reward, fidelity, KL, policy loss, value loss, entropy (default RetriKT reward).
    private static readonly double[][] GoldenSteps =
    [
        [96, 0.590088534867391, 0.5201470796018839, 0, -0.0017208177596330643, 1.4361688196659088, 0.6731368750333786],
        [96, 0.5096758492290974, 0.4756640400737524, -0.013581980019807816, -0.00071723572909832, 1.040521577000618, 0.5976166427135468],
    ];

    // Two samples of label 0 (seed 11) from the tuned prompts.
    private static readonly string[] GoldenSamples = ["Once upon a time, there was a funny", "Once upon a time, there was a little girl"];

    [SharedDataFact]
    public void SameSeedGivesTheRolloutsAndLossesOfTheReferenceCode()
    {
        var mlContext = new MLContext(seed: 7);
        using var model = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 1, PromptTokens = 4,
            PpoSteps = 2, RolloutsPerStep = 8, MiniBatchSize = 4, PpoEpochs = 2, MaxNewTokens = 12,
        }).Fit(StoryData(mlContext));
        var steps = model.TrainingReport!.PpoSteps;
        var actual = steps.Select(s => new double[] { s.GeneratedTokens, s.Reward, s.Fidelity, s.Kl, s.PolicyLoss, s.ValueLoss, s.Entropy }).ToArray();
        var samples = model.Generate(label: 0, count: 2, seed: 11).Select(s => s.Text).ToArray();
        string Dump() => "actual steps: " + string.Join(" | ", actual.Select(r => string.Join(", ", r.Select(v => v.ToString("R", CultureInfo.InvariantCulture))))) +
                         "; samples: " + string.Join(" | ", samples.Select(s => $"\"{s}\""));

        string[] names = ["generated tokens", "reward", "fidelity", "kl", "policy loss", "value loss", "entropy"];
        Assert.True(actual.Length == GoldenSteps.Length, $"{actual.Length} PPO steps, expected {GoldenSteps.Length}. {Dump()}");
        for (int s = 0; s < GoldenSteps.Length; s++)
            for (int j = 0; j < names.Length; j++)
                Assert.True(Math.Abs(actual[s][j] - GoldenSteps[s][j]) <= 1e-5 + 1e-5 * Math.Abs(GoldenSteps[s][j]),
                    $"PPO step {s + 1} {names[j]}: expected {GoldenSteps[s][j].ToString("R", CultureInfo.InvariantCulture)}, found {actual[s][j].ToString("R", CultureInfo.InvariantCulture)}. {Dump()}");
        Assert.True(GoldenSamples.SequenceEqual(samples), $"samples after training differ. {Dump()}");
    }
}
