using Microsoft.ML;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;
using TorchSharp;
using static RetriKT.MLNet.Tests.SoftPrompt.SoftPromptPpoTrainerTests;

namespace RetriKT.MLNet.Tests.SoftPrompt;

/// <summary>
/// A PPO fit leaves torch's process-wide generator alone. It seeded that generator with the run's seed and drew its
/// value head from it: every fit reset the random stream of the application and of every other thread using torch, and
/// a thread drawing from it while a fit started changed that fit's value head (same seed, another run). The run itself
/// is unchanged: <see cref="PpoGoldenTests"/> still holds bit for bit.
/// </summary>
[Collection(nameof(PpoGoldenTests))]
public class PpoProcessRngTests
{
    private static float[] Draw() => torch.rand(16).data<float>().ToArray();

    [SharedDataFact]
    public void APpoFitNeitherSeedsNorDrawsFromTorchsProcessWideGenerator()
    {
        var mlContext = new MLContext(seed: 7);
        var data = StoryData(mlContext);
        using var teacher = TeacherModel.Load(Stories260K); // loading builds modules, which draw their initial weights
        torch.random.manual_seed(99);
        var expected = Draw();

        torch.random.manual_seed(99);
        using var model = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = Stories260K, Teacher = teacher, Template = StoryMood, SupervisedEpochs = 1, PromptTokens = 4,
            PpoSteps = 2, RolloutsPerStep = 8, MiniBatchSize = 4, PpoEpochs = 2, MaxNewTokens = 12,
        }).Fit(data);
        Assert.Equal(2, model.TrainingReport!.PpoSteps.Count);
        Assert.Equal(expected, Draw());
    }
}
