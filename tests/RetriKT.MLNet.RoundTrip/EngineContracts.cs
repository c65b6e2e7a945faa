using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace RetriKT.MLNet.RoundTrip;

/// <summary>
/// Typed input/output classes for <see cref="PredictionEngine{TSrc,TDst}"/> per component, chosen by name on the
/// command line. The test process uses the same contracts, so both sides predict through identical engine types.
/// </summary>
public static class EngineContracts
{
    public sealed class TextInput
    {
        public string Text { get; set; } = "";
    }

    public sealed class TokenIdsOutput
    {
        [VectorType]
        public int[] TokenIds { get; set; } = [];
    }

    public sealed class LabelInput
    {
        public string Text { get; set; } = "";
        public string Label { get; set; } = "";
    }

    public sealed class LabelledTextInput
    {
        public string Text { get; set; } = "";
        public string Label { get; set; } = "";
    }

    public sealed class GeneratedOutput
    {
        public string GeneratedText { get; set; } = "";
    }

    public sealed class ClassifierOutput
    {
        public uint PredictedLabel { get; set; }

        [VectorType]
        public float[] Score { get; set; } = [];
    }

    /// <summary>Predictions of one contract for every row of <paramref name="input"/>, formatted as text.</summary>
    public static List<string> Predict(string contract, MLContext mlContext, ITransformer model, IDataView input) => contract switch
    {
        "text-tokens" => Run<TextInput, TokenIdsOutput>(mlContext, model, input,
            o => string.Join(',', o.TokenIds.Select(i => i.ToString(CultureInfo.InvariantCulture)))),
        "label-generated" => Run<LabelInput, GeneratedOutput>(mlContext, model, input, o => o.GeneratedText),
        "retrieval-classifier" => Run<LabelledTextInput, ClassifierOutput>(mlContext, model, input,
            o => o.PredictedLabel.ToString(CultureInfo.InvariantCulture) + ":" +
                 string.Join(',', o.Score.Select(x => x.ToString("R", CultureInfo.InvariantCulture)))),
        _ => throw new ArgumentException($"Unknown engine contract '{contract}'. Known: text-tokens, label-generated, retrieval-classifier."),
    };

    private static List<string> Run<TIn, TOut>(MLContext mlContext, ITransformer model, IDataView input, Func<TOut, string> format)
        where TIn : class, new() where TOut : class, new()
    {
        // The engine must not dispose the model (ML.NET's default): the harness keeps using it (re-save, further tests),
        // and disposable transformers (TorchSharp weights) would be freed.
        using var engine = mlContext.Model.CreatePredictionEngine<TIn, TOut>(model, new PredictionEngineOptions { OwnsTransformer = false });
        return mlContext.Data.CreateEnumerable<TIn>(input, reuseRowObject: false)
            .Select(row => format(engine.Predict(row))).ToList();
    }
}
