using System.Text.RegularExpressions;
using Microsoft.ML;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// <see cref="RetrievalClassifierTrainer.Options.MixWeightColumnName"/>: the mix is tuned with its own row weights while
/// the epoch is chosen with <see cref="RetrievalClassifierTrainer.Options.ValidationWeightColumnName"/>'s. The store is
/// 480 real SST-2 training sentences soft-labelled by the shipped stand-in teacher.
/// </summary>
public class MixWeightTests
{
    private sealed class Row
    {
        public string Text { get; set; } = "";
        public string Label { get; set; } = "";
        public float Weight { get; set; }
        public float MixWeight { get; set; }
    }

    [SharedDataFact]
    public void TheMixIsTunedWithItsOwnWeightsAndTheEpochWithTheValidationWeights()
    {
        var ml = new MLContext(seed: 1);
        var logs = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Info) lock (logs) logs.Add(e.RawMessage); };
        var (kept, heldOut) = RetriKTPipeline.HoldOut(ShippedTeachers.Sst2TeacherLabelledStore(480), 0.25, seed: 3);
        var train = TestData.Sst2Train(ml, 13);
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        // The mix weighs the first 40 rows only; the epoch weighs all 120.
        var validation = keyMap.Transform(ml.Data.LoadFromEnumerable(heldOut.Select((r, i) => new Row { Text = r.Text, Label = r.Label, Weight = 1, MixWeight = i < 40 ? 1 : 0 })));
        RetrievalClassifierTrainer.Options Options(string? mixWeights) => new()
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 32, Epochs = 8, BatchSize = 16, LearningRate = 1e-2, LexicalNeighborCount = 16,
            EarlyStoppingPatience = 1, EarlyStoppingMinPatienceSteps = 0, Seed = 3, StoreData = kept.ToDataView(ml),
            ValidationSet = validation, ValidationWeightColumnName = nameof(Row.Weight), MixWeightColumnName = mixWeights,
        };
        List<string> Train(string? mixWeights)
        {
            logs.Clear();
            using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(Options(mixWeights)).Fit(keyMap.Transform(train));
            return logs.Where(l => Regex.IsMatch(l, @"^(Epoch \d+: validation NLL|Kept the weights|Tuned on)")).ToList();
        }

        var plain = Train(null);
        var own = Train(nameof(Row.MixWeight));
        var same = Train(nameof(Row.Weight));
        static List<string> Epochs(List<string> lines) => lines.Where(l => !l.StartsWith("Tuned on", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(Epochs(plain));
        Assert.Equal(Epochs(plain), Epochs(own));
        Assert.Equal(plain, same);
        Assert.NotEqual(plain.Single(l => l.StartsWith("Tuned on", StringComparison.Ordinal)), own.Single(l => l.StartsWith("Tuned on", StringComparison.Ordinal)));

        var trainers = ml.MulticlassClassification.Trainers;
        var noValidation = Options("MixWeight");
        noValidation.ValidationSet = null;
        noValidation.EarlyStoppingPatience = 0;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => trainers.RetrievalClassifier(noValidation));
        Assert.Contains("MixWeightColumnName 'MixWeight' names a column of the ValidationSet, which is not given.", e.Message);
        var zero = Options(nameof(Row.MixWeight));
        zero.ValidationSet = keyMap.Transform(ml.Data.LoadFromEnumerable(heldOut.Select(r => new Row { Text = r.Text, Label = r.Label, Weight = 1, MixWeight = 0 })));
        var none = Assert.Throws<ArgumentException>(() => trainers.RetrievalClassifier(zero).Fit(keyMap.Transform(train)));
        Assert.StartsWith("MixWeightColumnName 'MixWeight': no validation row has a positive weight (120 rows whose label the store knows)", none.Message);
    }
}
