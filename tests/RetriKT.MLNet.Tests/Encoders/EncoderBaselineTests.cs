using RetriKT.Evaluation;
using RetriKT.Samples.Data;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>The evaluation harness's frozen-encoder + logistic-regression baseline rows on real few-shot data.</summary>
public class EncoderBaselineTests
{
    [SharedDataFact]
    public void MiniLMLogisticRegressionBeatsMajorityOnSst2FewShot()
    {
        var full = FewShotBenchmarks.Load(SharedData.Path("data"), "SST-2", 13);
        // 240 evaluation rows keep the test in seconds; the full split is the harness's job (docs/evaluation/results.jsonl).
        var task = full with { Test = full.Test.Take(240).ToList() };
        var result = EncoderBaselines.Run(task, Rows.EncoderLogRegMiniLM, 13);
        double majority = task.MajorityAccuracy();
        Assert.Equal(240, result.TestRows);
        Assert.True(result.Accuracy >= majority + 0.05, $"accuracy {result.Accuracy:P1} vs majority {majority:P1}");
        Assert.NotNull(result.FewShotDevAccuracy);
        Assert.InRange(result.StudentParameters!.Value, 22_000_000L, 23_000_000L);
        Assert.NotEqual(EncoderBaselines.ConfigKey(Rows.EncoderLogRegMiniLM), EncoderBaselines.ConfigKey(Rows.EncoderLogRegArcticXs));
    }
}
