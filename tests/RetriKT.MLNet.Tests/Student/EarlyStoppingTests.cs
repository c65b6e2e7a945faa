using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// Early stopping (<see cref="RetrievalClassifierTrainer.Options.EarlyStoppingPatience"/>) on SST-2's 16-shot split
/// with its 32 dev rows as the validation set: training stops once the dev NLL has not fallen for the patience, the
/// model keeps the best epoch's weights (its own scores on the dev rows give the logged best NLL back), and that model
/// is at least as good on the dev rows as the same run trained to the end. 32 rows in batches of 8 make epochs of 4
/// steps, so a patience of 1 epoch with a least wait of 8 steps waits 2 epochs.
/// </summary>
public class EarlyStoppingTests
{
    private static RetrievalClassifierTrainer.Options Tiny(IDataView validation, int patience) => new()
    {
        HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 32, Epochs = 40, BatchSize = 8, LearningRate = 1e-2, TokenDropout = 0,
        UseRetrieval = false, ValidationSet = validation, EarlyStoppingPatience = patience, EarlyStoppingMinPatienceSteps = 8, Seed = 3,
    };

    [Fact]
    public void TrainingKeepsTheBestEpochAndStopsAfterThePatience()
    {
        var ml = new MLContext(seed: 1);
        var logs = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Info) lock (logs) logs.Add(e.Message); };
        var train = TestData.Sst2Train(ml, 13);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        var devRows = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "k-shot", "16-13", "dev.tsv"));
        var dev = keyMap.Transform(ml.Data.LoadFromEnumerable(devRows));

        using var stopped = ml.MulticlassClassification.Trainers.RetrievalClassifier(Tiny(dev, patience: 1)).Fit(keyMap.Transform(train));
        Assert.Contains(logs, l => l.Contains("Early stopping waits 2 epochs without a lower validation NLL, not 1: an epoch is 4 steps and the wait is at least 8 steps.", StringComparison.Ordinal));
        var stop = logs.Select(l => Regex.Match(l, @"training stops after epoch (\d+) of 40")).Single(m => m.Success);
        var kept = logs.Select(l => Regex.Match(l, @"Kept the weights of epoch (\d+) \(validation NLL ([0-9.eE+-]+)\)")).Single(m => m.Success);
        int stopEpoch = int.Parse(stop.Groups[1].Value), keptEpoch = int.Parse(kept.Groups[1].Value);
        double keptNll = double.Parse(kept.Groups[2].Value, CultureInfo.InvariantCulture);
        Assert.Equal(stopEpoch - 2, keptEpoch); // two epochs (8 steps) without a lower NLL after the kept one
        Assert.True(stopEpoch < 40, $"a 16-shot student learns its 32 rows well before 40 epochs; it stopped at {stopEpoch}");
        Assert.Equal(stopEpoch, logs.Count(l => Regex.IsMatch(l, @"Epoch \d+: validation NLL")));

        // The kept weights are the ones scored: the model's own dev probabilities give the logged NLL.
        double Nll(RetrievalClassifierTransformer model)
        {
            var scored = model.Transform(dev);
            var scores = scored.GetColumn<float[]>("Score").ToList();
            var labels = scored.GetColumn<uint>("Label").ToList();
            return -scores.Select((s, i) => Math.Log(Math.Max(s[(int)labels[i] - 1], 1e-12))).Average();
        }
        double stoppedNll = Nll(stopped);
        Assert.True(Math.Abs(stoppedNll - keptNll) < 1e-3 * Math.Max(1, keptNll), $"kept epoch's NLL {keptNll}, the model's own {stoppedNll}");

        // Scoring draws no random numbers, so the run to the end follows the same path: its last epoch is no better.
        logs.Clear();
        using var full = ml.MulticlassClassification.Trainers.RetrievalClassifier(Tiny(dev, patience: 0)).Fit(keyMap.Transform(train));
        Assert.DoesNotContain(logs, l => l.Contains("validation NLL"));
        Assert.True(stoppedNll <= Nll(full) + 1e-6, $"the kept epoch's dev NLL {stoppedNll} is above the last epoch's {Nll(full)}");
    }

    [Fact]
    public void WithoutRetrievalLossAndTheEpochChosenOnTheHeadTheRetrievalStudentIsTheStoreOnlyStudentPlusRetrieval()
    {
        var ml = new MLContext(seed: 1);
        var logs = new List<string>();
        // The epoch scores, the stop and the kept epoch (not the mix tuned after training, which only the retrieval student has).
        ml.Log += (_, e) =>
        {
            if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Info && Regex.IsMatch(e.Message, @"Epoch \d+: validation NLL|training stops after|Kept the weights"))
                lock (logs) logs.Add(e.Message);
        };
        var train = TestData.Sst2Train(ml, 13);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        var dev = keyMap.Transform(ml.Data.LoadFromEnumerable(TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "k-shot", "16-13", "dev.tsv"))));
        List<float[]> Scores(ITransformer model) => model.Transform(dev).GetColumn<float[]>("Score").ToList();

        using var storeOnly = ml.MulticlassClassification.Trainers.RetrievalClassifier(Tiny(dev, patience: 1)).Fit(keyMap.Transform(train));
        var storeOnlyLog = logs.ToList();
        logs.Clear();
        var paired = Tiny(dev, patience: 1);
        (paired.UseRetrieval, paired.RetrievalLossWeight, paired.SelectEpochOnHead) = (true, 0, true);
        using var withRetrieval = ml.MulticlassClassification.Trainers.RetrievalClassifier(paired).Fit(keyMap.Transform(train));

        // The same epochs scored the same way, and the same head: retrieval is added to one and the same model.
        Assert.Contains(storeOnlyLog, l => l.Contains("Kept the weights of epoch", StringComparison.Ordinal));
        Assert.Equal(storeOnlyLog, logs);
        using var head = withRetrieval.WithRetrievalWeight(0, 0);
        var expected = Scores(storeOnly);
        var actual = Scores(head);
        for (int i = 0; i < expected.Count; i++) Assert.Equal(expected[i], actual[i]);
        using var retrievalAlone = withRetrieval.WithRetrievalWeight(1, 0);
        Assert.Contains(Scores(retrievalAlone).Zip(expected), p => !p.First.SequenceEqual(p.Second)); // the memory is there, and is not the head

        // Scored on the mix instead, the same training keeps another criterion's epochs (the log differs).
        logs.Clear();
        paired.SelectEpochOnHead = false;
        using var onMix = ml.MulticlassClassification.Trainers.RetrievalClassifier(paired).Fit(keyMap.Transform(train));
        Assert.NotEqual(storeOnlyLog, logs);
    }

    /// <summary>
    /// Training stopped early ends its progress at the epochs it ran: the last "RetrievalClassifier" report says it is done
    /// (step = total). It stayed at e.g. 9 of 40, so a progress bar never reached 100 % and the stage's end was never logged.
    /// </summary>
    [Fact]
    public void TrainingStoppedEarlyReportsItsProgressDone()
    {
        var ml = new MLContext(seed: 1);
        var logs = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Info) lock (logs) logs.Add(e.Message); };
        var train = TestData.Sst2Train(ml, 13);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        var dev = keyMap.Transform(ml.Data.LoadFromEnumerable(TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "k-shot", "16-13", "dev.tsv"))));
        var reports = new List<RetriKT.MLNet.Common.TrainingProgress>();
        var options = Tiny(dev, patience: 1);
        options.Progress = new SyncProgress(reports.Add);

        using var stopped = ml.MulticlassClassification.Trainers.RetrievalClassifier(options).Fit(keyMap.Transform(train));
        int stopEpoch = int.Parse(logs.Select(l => Regex.Match(l, @"training stops after epoch (\d+) of 40")).Single(m => m.Success).Groups[1].Value);
        var last = reports.Last(p => p.Stage == "RetrievalClassifier");
        Assert.Equal(((long)stopEpoch, (long)stopEpoch), (last.Step, last.TotalSteps));
    }

    [Fact]
    public void EarlyStoppingWithoutAValidationSetOrWithABackboneFailsWithOneMessage()
    {
        var ml = new MLContext(seed: 1);
        var trainers = ml.MulticlassClassification.Trainers;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options { EarlyStoppingPatience = 3, StoreValidationShare = 0 }));
        Assert.Contains("EarlyStoppingPatience is 3 but there is no ValidationSet (or StoreValidationShare) to choose the epoch on.", e.Message);
        var negative = Assert.Throws<ArgumentOutOfRangeException>(() => trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options { EarlyStoppingPatience = -1 }));
        Assert.Contains("EarlyStoppingPatience must be >= 0, found -1.", negative.Message);
        var negativeSteps = Assert.Throws<ArgumentOutOfRangeException>(() => trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options { EarlyStoppingMinPatienceSteps = -5 }));
        Assert.Contains("EarlyStoppingMinPatienceSteps must be >= 0, found -5.", negativeSteps.Message);
        var withBackbone = new RetrievalClassifierTrainer.Options
        {
            EarlyStoppingPatience = 2, ValidationSet = TestData.Sst2Train(ml), Backbone = PretrainedEncoderPackage.MiniLM.Locate(),
        };
        var backbone = Assert.Throws<ArgumentOutOfRangeException>(() => trainers.RetrievalClassifier(withBackbone));
        Assert.Contains("EarlyStoppingPatience is 2, but it applies to the tiny student only, not with a Backbone", backbone.Message);
    }
}
