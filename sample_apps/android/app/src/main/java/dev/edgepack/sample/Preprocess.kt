package dev.edgepack.sample

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import android.graphics.Bitmap
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Paint
import android.graphics.Rect
import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * An image as the model's input, exactly as the manifest's `preprocessing` says (the bundle was
 * calibrated on images with that preprocess.toml): resize (stretch, letterbox with pad_value, or
 * center-crop) to size, colour order, pixel * scale, then (x - mean) / std per channel, NCHW or NHWC.
 */
object Preprocess {
    fun tensor(env: OrtEnvironment, image: Bitmap, p: Preprocessing): OnnxTensor {
        val sized = resize(image, p)
        val channels = if (p.color == "GRAY") 1 else 3
        val h = p.height
        val w = p.width
        val pixels = IntArray(w * h).also { sized.getPixels(it, 0, w, 0, 0, w, h) }
        val data = ByteBuffer.allocateDirect(4 * channels * h * w).order(ByteOrder.nativeOrder()).asFloatBuffer()
        val order = if (p.color == "BGR") intArrayOf(2, 1, 0) else intArrayOf(0, 1, 2) // channel c takes rgb[order[c]]
        for (c in 0 until channels) {
            for (i in 0 until h * w) {
                val px = pixels[i]
                val rgb = intArrayOf(Color.red(px), Color.green(px), Color.blue(px))
                val value = if (channels == 1) 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] else rgb[order[c]].toDouble()
                val mean = p.mean[if (p.mean.size > c) c else 0]
                val std = p.std[if (p.std.size > c) c else 0]
                val x = ((value * p.scale - mean) / std).toFloat()
                val index = if (p.layout == "NCHW") c * h * w + i else i * channels + c
                data.put(index, x)
            }
        }
        val shape = if (p.layout == "NCHW") longArrayOf(1, channels.toLong(), h.toLong(), w.toLong())
                    else longArrayOf(1, h.toLong(), w.toLong(), channels.toLong())
        return OnnxTensor.createTensor(env, data, shape)
    }

    private fun resize(image: Bitmap, p: Preprocessing): Bitmap {
        val out = Bitmap.createBitmap(p.width, p.height, Bitmap.Config.ARGB_8888)
        val canvas = Canvas(out)
        val paint = Paint(Paint.FILTER_BITMAP_FLAG)
        val src = Rect(0, 0, image.width, image.height)
        when (p.resize) {
            "letterbox" -> {
                canvas.drawColor(Color.rgb(p.padValue, p.padValue, p.padValue))
                val s = minOf(p.width.toFloat() / image.width, p.height.toFloat() / image.height)
                val w = (image.width * s).toInt()
                val h = (image.height * s).toInt()
                val left = (p.width - w) / 2
                val top = (p.height - h) / 2
                canvas.drawBitmap(image, src, Rect(left, top, left + w, top + h), paint)
            }
            "center-crop" -> {
                val s = maxOf(p.width.toFloat() / image.width, p.height.toFloat() / image.height)
                val w = (p.width / s).toInt()
                val h = (p.height / s).toInt()
                val left = (image.width - w) / 2
                val top = (image.height - h) / 2
                canvas.drawBitmap(image, Rect(left, top, left + w, top + h), Rect(0, 0, p.width, p.height), paint)
            }
            else -> canvas.drawBitmap(image, src, Rect(0, 0, p.width, p.height), paint) // stretch
        }
        return out
    }
}
