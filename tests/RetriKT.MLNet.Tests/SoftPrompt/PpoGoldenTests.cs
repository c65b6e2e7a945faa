using System.Globalization;
using Microsoft.ML;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.Infrastructure;
using static RetriKT.MLNet.Tests.SoftPrompt.SoftPromptPpoTrainerTests;

namespace RetriKT.MLNet.Tests.SoftPrompt;

/// <summary>Runs alone: <see cref="PpoProcessRngTests"/> seeds and reads torch's process-wide generator, which tests running in parallel could also draw from.</summary>
[CollectionDefinition(nameof(PpoGoldenTests), DisableParallelization = true)]
public sealed class PpoGoldenCollection;

/// <summary>
/// Same seed, same PPO run as the reference code: the goldens below were captured from it (first from the code before
/// the decode rework, commit 29aa836; recaptured when rollout, minibatch-order and generation seeds came to be derived
/// by SeedMixer.Derive; the rewards, fidelities and losses again when the verbalizer's words came to be encoded as
/// they read after the prompt, without SentencePiece's dummy-prefix space: same rollouts and samples, other scores; and
/// every value again when a label prompt's init text came to give way to the label word, which the 4-position prompt
/// had cut off), so a speed-up that changes what is sampled or learned fails here, naming the first value that moved.
/// </summary>
[Collection(nameof(PpoGoldenTests))]
public class PpoGoldenTests
{
    // Per PPO step: generated tokens, reward, fidelity, KL, policy loss, value loss, entropy (default RetriKT reward).
    private static readonly double[][] GoldenSteps =
    [
        [96, 0.5738885193131864, 0.5061136707663536, 0, -0.001993143931031227, 1.601473093032837, 0.5959804654121399],
        [96, 0.5194141175597906, 0.4830934889614582, -0.014072846621274948, -0.0004608466406352818, 0.9913715124130249, 0.5307103917002678],
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
