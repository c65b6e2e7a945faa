using Microsoft.ML;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// Cancellation was checked once per training batch only. The passes that embed the whole store (each epoch's retrieval
/// memory, and the final one the saved store keeps) and the mix grid did not check, so a cancelled training ran on
/// through them: measured at 7.7 s on a 3,032-entry store, and a minute or more on stores of tens of thousands. A
/// training cancelled when its last epoch is reported used to finish and return a model.
/// </summary>
public class StudentCancellationTests
{
    private sealed class CancelAtLastEpoch(CancellationTokenSource source, int epochs) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value)
        {
            if (value.Step >= epochs) source.Cancel();
        }
    }

    [Fact]
    public void ATrainingCancelledAfterItsLastEpochStopsInTheStoreEmbeddingPass()
    {
        var ml = new MLContext(seed: 1);
        var rows = RetrievalClassifierBehaviourTests.Synthetic(40, 1);
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(ml.Data.LoadFromEnumerable(rows)).Transform(ml.Data.LoadFromEnumerable(rows));
        using var source = new CancellationTokenSource();
        const int epochs = 2;
        var options = new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 8, Layers = 1, Heads = 2, MaxLength = 16, Epochs = epochs, Seed = 2,
            Progress = new CancelAtLastEpoch(source, epochs), CancellationToken = source.Token,
        };
        Assert.ThrowsAny<OperationCanceledException>(() => ml.MulticlassClassification.Trainers.RetrievalClassifier(options).Fit(keyed));
        Assert.True(source.IsCancellationRequested);
    }
}
